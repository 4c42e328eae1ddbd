//! Activation-store throughput: write, sequential read and shuffled read, in MB/s of f32
//! activations handed in or out (rows × d_model × 4 bytes, whatever the stored dtype), and the
//! compression ratio (stored-dtype bytes / bytes on disk), for f32, f16 and bf16.
//!
//! `store [--from <store-dir>] [--hook <name>] [--rows N] [--level L] [--dir <scratch>]`
//!
//! With `--from`, the activations (and ids) of a real captured store are used; otherwise
//! residual-stream-like activations are synthesised (d_model 576): per-dimension scales spread
//! log-normally, a few massive dimensions with a fixed sign, heavy-tailed per-token norms.
//! Reads come from the page cache (the store was just written), so they measure decoding, not
//! the disk. Each read is timed as the median of three after an untimed one, all through one
//! open `Store`: the steady state of training epoch after epoch, where a reader takes over the
//! buffers of the one before (the first reader of a store also faults in its shuffle buffer,
//! hundreds of MB for f32).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use monoscope_store::{
    ActivationBatch, Dtype, ModelIdentity, SequentialOptions, ShuffleOptions, Store, StoreSpec,
    StoreWriter,
};

use crate::report::{Measurement, emit, median_time};

const HOOK: &str = "blocks.15.hook_resid_post";
const BATCH: usize = 4096;

struct Args {
    from: Option<PathBuf>,
    hook: Option<String>,
    rows: usize,
    level: i32,
    dir: PathBuf,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut parsed = Args {
        from: None,
        hook: None,
        rows: 131_072,
        level: 3,
        dir: std::env::temp_dir().join(format!("monoscope-bench-store-{}", std::process::id())),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--from" => parsed.from = Some(value()?.into()),
            "--hook" => parsed.hook = Some(value()?.clone()),
            "--rows" => parsed.rows = value()?.parse()?,
            "--level" => parsed.level = value()?.parse()?,
            "--dir" => parsed.dir = value()?.into(),
            other => {
                bail!("unknown argument `{other}` (known: --from, --hook, --rows, --level, --dir)")
            }
        }
    }
    Ok(parsed)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let (data, source) = match &args.from {
        Some(dir) => real(dir, args.hook.as_deref(), args.rows)?,
        None => (
            synthetic(args.rows, 576),
            "synthetic residual-stream-like".to_string(),
        ),
    };
    let rows = data.rows();
    let d = data.d_model;
    println!("data source: {source}; {rows} rows, d_model {d}\n");
    let f32_mb = (rows * d * 4) as f64 / 1e6;
    let hook = data.hooks.keys().next().expect("one hook").clone();

    let mut measurements = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        let dir = args.dir.join(dtype.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        let spec = StoreSpec {
            dtype,
            zstd_level: args.level,
            ..StoreSpec::new(
                ModelIdentity {
                    name: "bench".into(),
                    sha256: String::new(),
                },
                vec![hook.clone()],
                d,
            )
        };
        let start = Instant::now();
        let mut writer = StoreWriter::create(&dir, spec)?;
        for lo in (0..rows).step_by(BATCH) {
            writer.write_batch(&monoscope_store::slice_batch(
                &data,
                lo..(lo + BATCH).min(rows),
            ))?;
        }
        writer.finish()?;
        let write_s = start.elapsed().as_secs_f64();

        let store = Store::open(&dir)?;
        let info = monoscope_store::info(&dir)?;
        let sequential = median_time(3, || {
            for b in store
                .sequential(SequentialOptions::new(&hook, BATCH))
                .expect("hook exists")
            {
                std::hint::black_box(b.expect("bench store reads"));
            }
        });
        let shuffled = median_time(3, || {
            for b in store
                .shuffled(ShuffleOptions::new(&hook, BATCH, 1))
                .expect("hook exists")
            {
                std::hint::black_box(b.expect("bench store reads"));
            }
        });
        let case = format!(
            "{dtype} {} d{d} zstd{}",
            if args.from.is_some() {
                "real"
            } else {
                "synthetic"
            },
            args.level
        );
        let m = |metric: &str, value: f64, unit: &str| {
            Measurement::new("store", &case, metric, value, unit).with_peak_rss()
        };
        measurements.push(m("write", f32_mb / write_s, "MB/s"));
        measurements.push(m(
            "read_sequential",
            f32_mb / sequential.as_secs_f64(),
            "MB/s",
        ));
        measurements.push(m("read_shuffled", f32_mb / shuffled.as_secs_f64(), "MB/s"));
        measurements.push(m("compression_ratio", info.compression_ratio(), "x"));
        measurements.push(m(
            "disk_bytes_per_value",
            info.compressed_bytes as f64 / (rows * d) as f64,
            "B",
        ));
        std::fs::remove_dir_all(&dir)?;
    }
    let _ = std::fs::remove_dir(&args.dir);
    emit(&measurements);
    Ok(())
}

/// Up to `rows` rows of one hook of a captured store.
fn real(
    dir: &std::path::Path,
    hook: Option<&str>,
    rows: usize,
) -> anyhow::Result<(ActivationBatch, String)> {
    let store = Store::open(dir)?;
    let hook = hook.map_or_else(|| store.manifest().hooks[0].clone(), str::to_string);
    let n = (rows as u64).min(store.row_count());
    let data = store.rows_of(0..n, &[&hook])?;
    let m = store.manifest();
    Ok((
        data,
        format!(
            "real activations of {} `{hook}` from {} ({})",
            m.model.name,
            dir.display(),
            m.dtype
        ),
    ))
}

/// Residual-stream-like activations: `x[r, j] = norm_r · (σ_j · g + massive_j)`, with σ_j
/// log-normal, four massive dimensions of magnitude ~30–100 and a per-token norm from a
/// Student-t-like tail, as in the residual streams of Llama-family models.
fn synthetic(rows: usize, d: usize) -> ActivationBatch {
    let mut rng = SplitMix(0x5EED);
    let sigma: Vec<f32> = (0..d).map(|_| (0.5 * rng.normal()).exp() * 0.3).collect();
    let mut massive = vec![0.0f32; d];
    for k in 0..4 {
        massive[(k * 131 + 17) % d] =
            if k % 2 == 0 { 1.0 } else { -1.0 } * (30.0 + 20.0 * k as f32);
    }
    let mut values = Vec::with_capacity(rows * d);
    for _ in 0..rows {
        let chi2: f32 = (0..4).map(|_| rng.normal().powi(2)).sum::<f32>() / 4.0;
        let norm = 1.0 / chi2.max(0.05).sqrt();
        for j in 0..d {
            values.push(norm * (sigma[j] * rng.normal() + massive[j] * (1.0 + 0.1 * rng.normal())));
        }
    }
    ActivationBatch {
        d_model: d,
        token_ids: (0..rows).map(|_| (rng.next() % 49_152) as u32).collect(),
        doc_ids: (0..rows).map(|r| (r / 128) as u32).collect(),
        positions: (0..rows).map(|r| (r % 128) as u32).collect(),
        hooks: BTreeMap::from([(HOOK.to_string(), values)]),
    }
}

/// A tiny deterministic generator (the bench crate carries no rand dependency).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    /// Standard normal by Box–Muller.
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}
