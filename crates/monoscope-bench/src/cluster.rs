//! Feature-neighbourhood search: exact top-k by blocked products, and the approximate
//! (inverted-file) search with its build and search times, recall@k against exact and peak
//! memory. First, the rate of the similarity tile through `gemm` and through a hand-written
//! dot-product loop (why both searches use `gemm`).
//!
//! `cluster [--sizes 16384,65536] [--dims 576,768] [--approx 262144] [--approx-dim 576]
//!  [--data planted|gaussian] [--k 10] [--block 2048] [--nlist <4·√n>] [--nprobe 48]
//!  [--train-per-list 32] [--train-iterations 8] [--recall-queries 1000] [--sae <dir>]`
//!
//! `--sizes ""` skips the exact cases, `--approx 0` the approximate one, `--sae ""` the real
//! decoder. The approximate
//! case's peak memory is the process's peak resident set from just before its index is built
//! (the kernel's high-water mark is reset there), so it counts the directions themselves
//! (`n × d × 4` bytes) plus the search's working memory and answer.
//!
//! Exact cases use Gaussian random dictionaries (timing does not depend on the data) and are
//! timed once each (the large ones take minutes). The approximate case uses a planted
//! dictionary by default: groups of 16 directions around random centres (cosine about 0.5
//! within a group), which is closer to an SAE than isotropic noise; `--data gaussian` gives the
//! hardest case, where every direction is nearly orthogonal to every other. With `--sae`
//! (default: the quickstart SAE when present) both searches also run on a real decoder.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use monoscope_cluster::Directions;
use monoscope_cluster::approximate::{
    DEFAULT_NPROBE, DEFAULT_TRAIN_ITERATIONS, DEFAULT_TRAIN_PER_LIST, IvfParams,
    approximate_neighbours, recall_at_k,
};
use monoscope_cluster::exact::{exact_neighbours, exact_scratch_bytes};
use monoscope_cluster::rng::{SplitMix64, planted_dictionary};

use crate::report::{Measurement, emit, median_time, peak_rss_mib};

struct Args {
    sizes: Vec<usize>,
    dims: Vec<usize>,
    approx: usize,
    approx_dim: usize,
    planted: bool,
    k: usize,
    block: usize,
    ivf: IvfParams,
    recall_queries: usize,
    sae: Option<PathBuf>,
}

fn list(value: &str) -> anyhow::Result<Vec<usize>> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("`{s}` is not a count"))
        })
        .collect()
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let quickstart = PathBuf::from("runs/quickstart/train/sae");
    let mut parsed = Args {
        sizes: vec![16_384, 65_536],
        dims: vec![576, 768],
        approx: 262_144,
        approx_dim: 576,
        planted: true,
        k: 10,
        block: 2048,
        ivf: IvfParams {
            nlist: None,
            nprobe: DEFAULT_NPROBE,
            train_per_list: DEFAULT_TRAIN_PER_LIST,
            train_iterations: DEFAULT_TRAIN_ITERATIONS,
            seed: 0,
        },
        recall_queries: 1000,
        sae: quickstart.exists().then_some(quickstart),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => parsed.sizes = list(value()?)?,
            "--dims" => parsed.dims = list(value()?)?,
            "--approx" => parsed.approx = value()?.parse()?,
            "--approx-dim" => parsed.approx_dim = value()?.parse()?,
            "--data" => {
                parsed.planted = match value()?.as_str() {
                    "planted" => true,
                    "gaussian" => false,
                    other => bail!("--data {other}: expected planted or gaussian"),
                }
            }
            "--k" => parsed.k = value()?.parse()?,
            "--block" => parsed.block = value()?.parse()?,
            "--nlist" => parsed.ivf.nlist = Some(value()?.parse()?),
            "--nprobe" => parsed.ivf.nprobe = value()?.parse()?,
            "--train-per-list" => parsed.ivf.train_per_list = value()?.parse()?,
            "--train-iterations" => parsed.ivf.train_iterations = value()?.parse()?,
            "--recall-queries" => parsed.recall_queries = value()?.parse()?,
            "--sae" => parsed.sae = Some(value()?).filter(|v| !v.is_empty()).map(PathBuf::from),
            other => bail!(
                "unknown argument `{other}` (known: --sizes, --dims, --approx, --approx-dim, \
                 --data, --k, --block, --nlist, --nprobe, --train-per-list, --train-iterations, \
                 --recall-queries, --sae)"
            ),
        }
    }
    Ok(parsed)
}

fn gaussian(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..rows * dim).map(|_| rng.gaussian()).collect()
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    println!(
        "rayon threads: {}; exact scratch bound {} MiB (block {})\n",
        rayon::current_num_threads(),
        exact_scratch_bytes(args.block) >> 20,
        args.block
    );
    let mut measurements = kernels(args.block, args.dims.first().copied().unwrap_or(576));
    for &dim in &args.dims {
        for &n in &args.sizes {
            let d = Directions::from_rows(&gaussian(n, dim, 1), dim, "gaussian")?;
            let started = Instant::now();
            let lists = exact_neighbours(&d, &d, args.k, args.block, true, &mut |_| Ok(()))?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(lists.iter().all(|l| l.len() == args.k));
            let case = format!("exact top-{} {n} x d{dim}", args.k);
            eprintln!("{case}: {seconds:.2} s");
            measurements
                .push(Measurement::new("cluster", &case, "seconds", seconds, "s").with_peak_rss());
            measurements.push(Measurement::new(
                "cluster",
                &case,
                "product_rate",
                2.0 * (n * n * dim) as f64 / seconds / 1e9,
                "GFLOP/s",
            ));
        }
    }
    if args.approx > 0 {
        let dim = args.approx_dim;
        let (rows, data) = if args.planted {
            (
                planted_dictionary(args.approx / 16, 16, dim, 1.0, 2).0,
                "planted groups of 16",
            )
        } else {
            (gaussian(args.approx, dim, 2), "gaussian")
        };
        let d = Directions::from_rows(&rows, dim, data)?;
        drop(rows);
        let case = format!("ivf top-{} {} x d{dim} {data}", args.k, d.len());
        approximate(&args, &d, &case, &mut measurements)?;
    }
    if let Some(dir) = &args.sae {
        let sae = monoscope_sae::load_sae(dir)?;
        let d = Directions::from_sae(&sae, &dir.display().to_string())?;
        let started = Instant::now();
        exact_neighbours(&d, &d, args.k, args.block, true, &mut |_| Ok(()))?;
        let seconds = started.elapsed().as_secs_f64();
        let case = format!(
            "exact top-{} {} ({}x d{})",
            args.k,
            dir.display(),
            d.len(),
            d.dim()
        );
        measurements.push(Measurement::new("cluster", &case, "seconds", seconds, "s"));
        let case = format!(
            "ivf top-{} {} ({}x d{})",
            args.k,
            dir.display(),
            d.len(),
            d.dim()
        );
        approximate(&args, &d, &case, &mut measurements)?;
    }
    emit(&measurements);
    Ok(())
}

/// The similarity tile two ways: `gemm` (what the exact search uses) and a hand-written loop of
/// vectorisable dot products, parallel over rows.
fn kernels(block: usize, dim: usize) -> Vec<Measurement> {
    let a = gaussian(block, dim, 3);
    let b = gaussian(block, dim, 4);
    let mut tile = vec![0.0f32; block * block];
    let flops = 2.0 * (block * block * dim) as f64;
    let case = format!("tile {block}x{block}x{dim}");
    let gemm_time = median_time(3, || {
        // SAFETY: `tile` is [block, block] row-major, `a` is read as [block, dim] row-major
        // and `b` as its transpose [dim, block]; all accesses stay inside the slices.
        unsafe {
            gemm::gemm(
                block,
                block,
                dim,
                tile.as_mut_ptr(),
                1,
                block as isize,
                false,
                a.as_ptr(),
                1,
                dim as isize,
                b.as_ptr(),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            )
        }
    });
    let expected = tile[block + 1];
    let hand_time = median_time(3, || {
        use rayon::prelude::*;
        tile.par_chunks_mut(block).enumerate().for_each(|(r, row)| {
            let q = &a[r * dim..(r + 1) * dim];
            for (c, out) in row.iter_mut().enumerate() {
                *out = dot(q, &b[c * dim..(c + 1) * dim]);
            }
        });
    });
    assert!((tile[block + 1] - expected).abs() < 1e-3 * expected.abs().max(1.0));
    vec![
        Measurement::new(
            "cluster",
            &case,
            "gemm_rate",
            flops / gemm_time.as_secs_f64() / 1e9,
            "GFLOP/s",
        ),
        Measurement::new(
            "cluster",
            &case,
            "hand_dot_rate",
            flops / hand_time.as_secs_f64() / 1e9,
            "GFLOP/s",
        ),
    ]
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail = a.len() / 8 * 8;
    acc.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

/// Resets the kernel's record of this process's peak resident set (Linux `clear_refs` 5), so
/// that the next reading covers what follows only. Returns whether it worked.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn approximate(
    args: &Args,
    d: &Directions,
    case: &str,
    measurements: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let reset = reset_peak_rss();
    let started = Instant::now();
    let (lists, report) =
        approximate_neighbours(d, d, args.k, true, &args.ivf, args.block, &|_| Ok(()))?;
    let total = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    eprintln!(
        "{case}: built in {:.1} s, searched in {:.1} s (nlist {}, nprobe {}, largest list {})",
        report.build_seconds,
        report.search_seconds,
        report.nlist,
        report.nprobe,
        report.largest_list
    );
    anyhow::ensure!(
        lists
            .iter()
            .enumerate()
            .all(|(i, l)| l.len() == args.k || !d.is_alive(i))
    );
    let started = Instant::now();
    let (recall, used) = recall_at_k(
        d,
        d,
        &lists,
        args.k,
        true,
        args.recall_queries,
        args.block,
        7,
    )?;
    eprintln!(
        "{case}: recall@{} {recall:.4} on {used} queries (checked in {:.1} s)",
        args.k,
        started.elapsed().as_secs_f64()
    );
    let case = format!("{case} nlist{} nprobe{}", report.nlist, report.nprobe);
    let m = |metric: &str, value: f64, unit: &str| {
        Measurement::new("cluster", &case, metric, value, unit)
    };
    measurements.push(m("build_seconds", report.build_seconds, "s"));
    measurements.push(m("search_seconds", report.search_seconds, "s"));
    measurements.push(m("total_seconds", total, "s").with_peak_rss());
    measurements.push(m(
        "recall_at_k",
        recall,
        &format!("fraction ({used} queries)"),
    ));
    if let (true, Some(peak)) = (reset, peak) {
        measurements.push(m("peak_rss", peak, "MiB (directions + search)"));
    }
    measurements.push(m(
        "scratch_bound",
        report.scratch_bytes as f64 / (1 << 20) as f64,
        "MiB",
    ));
    Ok(())
}
