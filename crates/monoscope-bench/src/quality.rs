//! `quality [--run DIR] [--sparsify-python PY] [--epochs N] [--batch N]`: the held-out quality
//! of every SAE a train stage made (the main one and its sweep), on a real store — held-out
//! FVU, FVU without the massive rows, L0, dead fraction and `ce_loss_score` — and, with
//! `--sparsify-python`, of sparsify trained on exactly the same training rows
//! (`xtask/compare/sparsify_quality.py`, one run per TopK width), every SAE scored by the same
//! evaluator on the same held-out rows and spliced into the model on the same windows.
//!
//! The run comes from `cargo xtask pipeline run pipelines/quality.toml` (`runs/quality`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use monoscope_artifacts::Run;
use monoscope_artifacts::capture;
use monoscope_artifacts::train::TrainOutputs;
use monoscope_lm::Device;
use monoscope_sae::{Architecture, EvalReport, Evaluator, Sae, SpliceEvaluator, load_sae};
use monoscope_store::{SequentialOptions, Store};
use monoscope_train::{ModelSplice, held_out_windows};

use crate::report::{Measurement, emit};

/// Next-token predictions of the CE-loss splice (the train stage's default).
const SPLICE_TOKENS: usize = 2048;

struct Options {
    run: PathBuf,
    sparsify_python: Option<PathBuf>,
    epochs: u32,
    batch: usize,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let usage = "usage: quality [--run DIR] [--sparsify-python PY] [--epochs N] [--batch N]";
    let mut o = Options {
        run: PathBuf::from("runs/quality"),
        sparsify_python: None,
        epochs: 2,
        batch: 4096,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().with_context(|| usage.to_string())?;
        match flag.as_str() {
            "--run" => o.run = value.into(),
            "--sparsify-python" => o.sparsify_python = Some(value.into()),
            "--epochs" => o.epochs = value.parse().context("--epochs N")?,
            "--batch" => o.batch = value.parse().context("--batch N")?,
            _ => bail!("{usage}"),
        }
    }
    Ok(o)
}

/// One SAE to score: its name in the table and its directory.
struct Entry {
    name: String,
    sae: Sae,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = options(args)?;
    let missing = || {
        format!(
            "{}: no finished train stage; run `cargo xtask pipeline run pipelines/quality.toml` first",
            o.run.display()
        )
    };
    let run = Run::open(&o.run).with_context(missing)?;
    let train = TrainOutputs::new(run.require(&["train"], None, "an SAE")?.dir);
    let store_dir = run
        .require(&[capture::KIND], None, "an activation store")?
        .dir
        .join(capture::STORE_DIR);
    let main_eval: EvalReport = train.eval()?.with_context(missing)?;
    let mut entries = vec![Entry {
        name: "main".into(),
        sae: load_sae(&train.sae_dir())?,
    }];
    // The members of the last run: `sweep.json` lists them (older members' directories may
    // still be there).
    if train.sweep_path().is_file() {
        for name in train.sweep_names()? {
            if name != "main" {
                let sae = load_sae(&train.member(&name).sae_dir())?;
                entries.push(Entry { name, sae });
            }
        }
    }
    let store = Store::open(&store_dir)?;
    let hook = entries[0]
        .sae
        .metadata
        .hook_name
        .clone()
        .context("the SAE's cfg.json names no hook")?;
    let held = store.row_count() - main_eval.tokens..store.row_count();
    let first_held_shard = (0..store.shard_count())
        .find(|&i| store.shard_rows(i).start == held.start)
        .context("the held-out rows of eval.json do not start at a shard boundary")?;

    if let Some(python) = &o.sparsify_python {
        let widths: std::collections::BTreeSet<(usize, usize)> = entries
            .iter()
            .filter_map(|e| match e.sae.architecture {
                Architecture::TopK { k } => Some((e.sae.d_sae, k)),
                _ => None,
            })
            .collect();
        let scratch = o.run.join("bench-quality");
        std::fs::create_dir_all(&scratch)?;
        let (train_npy, held_npy) = (scratch.join("train.npy"), scratch.join("held.npy"));
        monoscope_store::export(&store_dir, &hook, 0..held.start, &train_npy)?;
        monoscope_store::export(&store_dir, &hook, held.clone(), &held_npy)?;
        for (d_sae, k) in widths {
            let out = scratch.join(format!("sparsify-{d_sae}-k{k}"));
            let result = sparsify(python, &train_npy, &held_npy, d_sae, k, &o, &out)?;
            eprintln!("sparsify {d_sae} k={k}: {result}");
            entries.push(Entry {
                name: format!("sparsify-{d_sae}"),
                sae: load_sae(&out)?,
            });
        }
    }

    // One evaluator, the same held-out rows, for every SAE.
    let threshold = main_eval.massive.as_ref().map(|m| m.norm_threshold);
    let mut evaluators: Vec<Evaluator> = entries
        .iter()
        .map(|e| {
            let ev = Evaluator::new(&e.sae, 0.1);
            match threshold {
                Some(t) => ev.with_massive_threshold(t),
                None => ev,
            }
        })
        .collect();
    let mut options = SequentialOptions::new(hook.clone(), 4096);
    options.shards = Some(first_held_shard..store.shard_count());
    for batch in store.sequential(options)? {
        let batch = batch?;
        for ev in &mut evaluators {
            ev.add(&batch.activations)?;
        }
    }
    let reports: Vec<EvalReport> = evaluators.into_iter().map(Evaluator::finish).collect();

    // The CE-loss splice on the same windows for every SAE.
    let model_path = monoscope_fetch::resolve_model("smollm2")?;
    let model = monoscope_lm::load(&model_path, &Device::flex())?;
    let bos = model.tokenizer().bos_id();
    let windows = held_out_windows(
        &store,
        held.clone(),
        bos,
        store.manifest().context_length,
        SPLICE_TOKENS,
    )?;
    let mut splice = ModelSplice::new(&model, model.hook(&hook)?, windows, bos.is_some());
    if let Some(t) = threshold {
        splice = splice.with_massive_norm(t);
    }

    let mut measurements = Vec::new();
    for (entry, report) in entries.iter().zip(&reports) {
        let ce = splice.evaluate_splice(&entry.sae)?;
        let case = format!(
            "{} ({}, {} latents)",
            entry.name,
            arch_name(&entry.sae),
            entry.sae.d_sae
        );
        let mut add = |metric: &str, value: f64, unit: &str| {
            measurements.push(Measurement::new("quality", &case, metric, value, unit));
        };
        add("held-out FVU", report.fvu, "fraction");
        if let Some(m) = &report.massive {
            add("FVU without massive", m.fvu_without, "fraction");
        }
        add("L0", report.l0, "latents");
        add("dead", report.dead_fraction, "fraction");
        add("ce_loss_score", ce.ce_loss_score, "fraction");
        if let Some(m) = &ce.massive {
            add("ce_loss_score, massive clean", m.ce_loss_score, "fraction");
            add("massive positions spliced", m.positions as f64, "positions");
        }
        add("KL with SAE", ce.kl_div_with_sae, "nats");
    }
    if let Some(m) = &reports[0].massive {
        eprintln!(
            "held-out rows: {}, {} massive ({:.3}% of rows, {:.1}% of the squared norm; norm above {:.1})",
            reports[0].tokens,
            m.rows,
            100.0 * m.row_fraction,
            100.0 * m.sq_norm_fraction,
            m.norm_threshold
        );
        let all = where_massive(&store, &hook, 0..store.row_count(), m.norm_threshold)?;
        let tokens: Vec<String> = all
            .tokens
            .iter()
            .map(|(id, n)| format!("{:?} ×{n}", model.tokenizer().decode(&[*id])))
            .collect();
        eprintln!(
            "whole store: {} rows, {} massive ({:.3}% of rows, {:.1}% of the squared norm)",
            all.rows,
            all.massive,
            100.0 * all.massive as f64 / all.rows.max(1) as f64,
            100.0 * all.massive_sq_norm / all.sq_norm.max(f64::MIN_POSITIVE)
        );
        eprintln!("  at positions (position, rows): {:?}", all.positions);
        eprintln!("  on tokens: {}", tokens.join(", "));
    }
    emit(&measurements);
    Ok(())
}

/// Where the massive rows of a range are: counts, their share of the squared norm, and their
/// most frequent positions and tokens (ten of each, with counts).
struct Massive {
    rows: u64,
    massive: u64,
    sq_norm: f64,
    massive_sq_norm: f64,
    positions: Vec<(u32, usize)>,
    tokens: Vec<(u32, usize)>,
}

fn where_massive(
    store: &Store,
    hook: &str,
    rows: std::ops::Range<u64>,
    threshold: f32,
) -> anyhow::Result<Massive> {
    let mut positions = std::collections::BTreeMap::<u32, usize>::new();
    let mut tokens = std::collections::BTreeMap::<u32, usize>::new();
    let mut m = Massive {
        rows: rows.end - rows.start,
        massive: 0,
        sq_norm: 0.0,
        massive_sq_norm: 0.0,
        positions: Vec::new(),
        tokens: Vec::new(),
    };
    let d = store.d_model();
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + 4096).min(rows.end);
        let batch = store.rows_of(start..end, &[hook])?;
        for (r, x) in batch.hooks[hook].chunks(d).enumerate() {
            let sq: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            m.sq_norm += sq;
            if sq.sqrt() > f64::from(threshold) {
                m.massive += 1;
                m.massive_sq_norm += sq;
                *positions.entry(batch.positions[r]).or_default() += 1;
                *tokens.entry(batch.token_ids[r]).or_default() += 1;
            }
        }
        start = end;
    }
    let top = |counts: std::collections::BTreeMap<u32, usize>| {
        let mut v: Vec<(u32, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(10);
        v
    };
    m.positions = top(positions);
    m.tokens = top(tokens);
    Ok(m)
}
fn arch_name(sae: &Sae) -> String {
    let training = sae.metadata.training_architecture.clone();
    match (&sae.architecture, training) {
        (_, Some(t)) => t,
        (Architecture::TopK { k }, None) => format!("topk k={k}"),
        (a, None) => format!("{a:?}").to_lowercase(),
    }
}

/// Runs the comparison script; returns its JSON line.
fn sparsify(
    python: &Path,
    train: &Path,
    held: &Path,
    d_sae: usize,
    k: usize,
    o: &Options,
    out: &Path,
) -> anyhow::Result<String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/compare/sparsify_quality.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--train", &train.display().to_string()])
        .args(["--held", &held.display().to_string()])
        .args(["--d-sae", &d_sae.to_string(), "--k", &k.to_string()])
        .args(["--epochs", &o.epochs.to_string()])
        .args(["--batch", &o.batch.to_string()])
        .args(["--out", &out.display().to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} {}: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.lines().last().unwrap_or_default().to_string())
}
