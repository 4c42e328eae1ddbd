//! Training end to end on synthetic data with a known sparse dictionary: recovery of the
//! planted features by every architecture, AuxK reviving dead latents, bit-identical resume,
//! non-finite input, sweeps, evaluation.

use monoscope_sae::train::{Batches, FitMember, FitObserver, FitOptions, Unobserved, fit};
use monoscope_sae::{
    ArchConfig, AuxKConfig, Optimizer, Sae, SaeError, SaeMetadata, StepMetrics, TrainConfig,
    Trainer, estimate_input_scale, evaluate,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D_IN: usize = 64;
const N_TRUE: usize = 256;

/// Unit-norm ground-truth features and a sampler of sparse non-negative combinations.
struct Synthetic {
    features: Vec<f32>,
    rng: ChaCha8Rng,
}

impl Synthetic {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut features = vec![0.0f32; N_TRUE * D_IN];
        for f in features.chunks_mut(D_IN) {
            f.iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0f32..1.0));
            let n = f.iter().map(|v| v * v).sum::<f32>().sqrt();
            f.iter_mut().for_each(|v| *v /= n);
        }
        Synthetic {
            features,
            rng: ChaCha8Rng::seed_from_u64(seed + 1000),
        }
    }

    /// `rows` samples, each ~5 features with coefficients in [0.5, 1.5) plus small noise.
    fn batch(&mut self, rows: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * D_IN];
        for row in out.chunks_mut(D_IN) {
            for f in 0..N_TRUE {
                if self.rng.random_bool(5.0 / N_TRUE as f64) {
                    let c = self.rng.random_range(0.5f32..1.5);
                    let feat = &self.features[f * D_IN..(f + 1) * D_IN];
                    row.iter_mut().zip(feat).for_each(|(r, v)| *r += c * v);
                }
            }
            row.iter_mut()
                .for_each(|r| *r += self.rng.random_range(-0.01f32..0.01));
        }
        out
    }

    /// Fraction of true features with some decoder row at cosine ≥ 0.9.
    fn recovered(&self, sae: &Sae) -> f64 {
        let rows: Vec<Vec<f32>> = sae
            .w_dec
            .chunks(D_IN)
            .map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(|v| v / n).collect()
            })
            .collect();
        let hits = self
            .features
            .chunks(D_IN)
            .filter(|f| {
                rows.iter()
                    .any(|r| r.iter().zip(*f).map(|(a, b)| a * b).sum::<f32>() >= 0.9)
            })
            .count();
        hits as f64 / N_TRUE as f64
    }
}

/// `lr`: the optimizer's default for the width when `None`.
fn train(
    arch: ArchConfig,
    optimizer: Optimizer,
    d_sae: usize,
    steps: u64,
    lr: Option<f32>,
    batch: usize,
) -> (Sae, Synthetic) {
    let mut data = Synthetic::new(1);
    let scale = estimate_input_scale(&data.batch(2048), D_IN).unwrap();
    let mut cfg = TrainConfig::new(D_IN, d_sae, arch, steps).with_optimizer(optimizer);
    if let Some(lr) = lr {
        cfg.lr = lr;
    }
    cfg.metrics_every = steps / 4;
    cfg.dead_after_tokens = 50_000;
    let mut trainer = Trainer::new(cfg, scale).unwrap();
    let mut last = None;
    while !trainer.is_finished() {
        if let Some(m) = trainer.step(&data.batch(batch)).unwrap() {
            last = Some(m);
        }
    }
    eprintln!("{}", last.unwrap().to_json_line());
    (trainer.export(SaeMetadata::default()), data)
}

/// Adam at `adam_lr`, and schedule-free sign descent at its default rate where it is the
/// architecture's default.
fn assert_recovers(name: &str, arch: ArchConfig, steps: u64, adam_lr: f32) {
    let mut runs = vec![(Optimizer::Adam, Some(adam_lr))];
    if Optimizer::default_for(&arch) == Optimizer::Signum {
        runs.push((Optimizer::Signum, None));
    }
    for (optimizer, lr) in runs {
        let (sae, mut data) = train(arch.clone(), optimizer, 512, steps, lr, 256);
        let frac = data.recovered(&sae);
        let held_out = data.batch(4096);
        let report = evaluate(&sae, &held_out, 0.1).unwrap();
        eprintln!(
            "{name} {optimizer:?}: recovered {frac:.3}, held-out fvu {:.4}, l0 {:.2}",
            report.fvu, report.l0
        );
        assert!(
            frac >= 0.9,
            "{name} with {optimizer:?} recovered only {frac:.3} of the planted features"
        );
    }
}

#[test]
fn relu_l1_recovers_planted_features() {
    let arch = ArchConfig::ReluL1 {
        l1_coeff: 1.0,
        l1_warmup_fraction: 0.05,
    };
    assert_recovers("relu-l1", arch, 3000, 2e-3);
}

#[test]
fn topk_recovers_planted_features() {
    let arch = ArchConfig::TopK {
        k: 5,
        aux: AuxKConfig::default(),
    };
    assert_recovers("topk", arch, 3000, 2e-3);
}

#[test]
fn batchtopk_recovers_planted_features() {
    let arch = ArchConfig::BatchTopK {
        k: 5,
        threshold_lr: 0.01,
        aux: AuxKConfig::default(),
    };
    // Batch-level selection starves more latents early on; AuxK needs more steps to revive
    // them (2e-3 × 3000 steps: 76%; 3e-3 × 5000: 96%).
    assert_recovers("batchtopk", arch, 5000, 3e-3);
}

#[test]
fn jumprelu_recovers_planted_features() {
    let arch = ArchConfig::JumpRelu {
        l0_coeff: 0.5,
        bandwidth: 0.05,
        init_threshold: 0.01,
        l0_warmup_fraction: 0.05,
    };
    assert_recovers("jumprelu", arch, 3000, 2e-3);
}

fn small_topk_config(steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig::new(
        D_IN,
        128,
        ArchConfig::TopK {
            k: 5,
            aux: AuxKConfig::default(),
        },
        steps,
    )
    .with_optimizer(Optimizer::Adam);
    cfg.lr = 2e-3;
    cfg.lr_warmup_steps = 5;
    cfg.metrics_every = 7;
    cfg.dead_after_tokens = 1_000;
    cfg
}

#[test]
fn resuming_from_a_checkpoint_equals_an_uninterrupted_run() {
    let batches: Vec<Vec<f32>> = {
        let mut data = Synthetic::new(3);
        (0..40).map(|_| data.batch(64)).collect()
    };
    for arch in [
        small_topk_config(40).architecture,
        ArchConfig::ReluL1 {
            l1_coeff: 1.0,
            l1_warmup_fraction: 0.1,
        },
        ArchConfig::BatchTopK {
            k: 5,
            threshold_lr: 0.01,
            aux: AuxKConfig::default(),
        },
        ArchConfig::JumpRelu {
            l0_coeff: 0.5,
            bandwidth: 0.05,
            init_threshold: 0.01,
            l0_warmup_fraction: 0.1,
        },
    ] {
        for optimizer in [Optimizer::Adam, Optimizer::Signum] {
            let mut cfg = small_topk_config(40).with_optimizer(optimizer);
            cfg.architecture = arch.clone();
            cfg.lr_warmup_steps = 5;
            cfg.massive_norm = Some(2.0);
            let mut whole = Trainer::new(cfg.clone(), 0.8).unwrap();
            let mut whole_metrics = Vec::new();
            whole
                .train(&batches, |m| whole_metrics.push(m.clone()))
                .unwrap();

            let dir = tempfile::tempdir().unwrap();
            let mut first = Trainer::new(cfg, 0.8).unwrap();
            let mut metrics = Vec::new();
            first
                .train(&batches[..17], |m| metrics.push(m.clone()))
                .unwrap();
            first
                .save_checkpoint(dir.path(), serde_json::json!({"shard": 2, "row": 17}))
                .unwrap();
            drop(first);
            let (mut resumed, position) = Trainer::resume(dir.path()).unwrap();
            assert_eq!(position["row"], 17);
            resumed
                .train(&batches[17..], |m| metrics.push(m.clone()))
                .unwrap();
            assert!(resumed.is_finished());
            assert_eq!(metrics, whole_metrics, "{arch:?} {optimizer:?}");
            assert_eq!(
                resumed.export(SaeMetadata::default()),
                whole.export(SaeMetadata::default()),
                "{arch:?} {optimizer:?}"
            );
        }
    }
}

#[test]
fn auxk_revives_planted_dead_latents() {
    // Latents 0..64 get encoder rows shrunk 100×: they still respond (weakly, positively)
    // to their directions but never make the top k, so they are dead from the start.
    let mut data = Synthetic::new(5);
    let scale = estimate_input_scale(&data.batch(1024), D_IN).unwrap();
    let fresh = Trainer::new(small_topk_config(600), scale)
        .unwrap()
        .export(SaeMetadata::default());
    let mut planted = fresh.clone();
    let s = planted.d_sae;
    for r in 0..D_IN {
        for i in 0..64 {
            planted.w_enc[r * s + i] *= 0.01;
        }
    }
    let held_out = data.batch(4096);
    let revived = |aux_coeff: f32, optimizer: Optimizer| -> usize {
        let mut cfg = small_topk_config(600).with_optimizer(optimizer);
        if optimizer == Optimizer::Adam {
            cfg.lr = 2e-3;
        }
        if let ArchConfig::TopK { aux, .. } = &mut cfg.architecture {
            aux.coeff = aux_coeff;
        }
        let mut t = Trainer::from_sae(cfg, &planted, scale).unwrap();
        let mut data = Synthetic::new(5);
        while !t.is_finished() {
            t.step(&data.batch(128)).unwrap();
        }
        let report = evaluate(&t.export(SaeMetadata::default()), &held_out, 0.1).unwrap();
        report.feature_frequency[..64]
            .iter()
            .filter(|&&f| f > 0.0)
            .count()
    };
    let before = evaluate(&planted, &held_out, 0.1)
        .unwrap()
        .feature_frequency[..64]
        .iter()
        .filter(|&&f| f > 0.0)
        .count();
    assert!(before <= 2, "planted latents were not dead: {before}");
    for optimizer in [Optimizer::Adam, Optimizer::Signum] {
        let (without, with) = (revived(0.0, optimizer), revived(1.0 / 32.0, optimizer));
        eprintln!(
            "{optimizer:?}: planted latents alive: before {before}, without AuxK {without}, with AuxK {with}"
        );
        assert!(with >= 48, "{optimizer:?}: AuxK revived only {with} of 64");
        assert!(
            with >= without + 32,
            "{optimizer:?}: AuxK made little difference: {without} → {with}"
        );
    }
}

#[test]
fn non_finite_input_is_an_error_naming_the_step() {
    let mut t = Trainer::new(small_topk_config(10), 1.0).unwrap();
    let mut data = Synthetic::new(2);
    t.step(&data.batch(32)).unwrap();
    t.step(&data.batch(32)).unwrap();
    let mut bad = data.batch(32);
    bad[5] = f32::NAN;
    let err = t.step(&bad).unwrap_err();
    assert!(matches!(err, SaeError::NonFinite { step: 2, .. }), "{err}");
    assert!(err.to_string().contains("step 2"), "{err}");
}

#[test]
fn a_sweep_feeds_every_trainer_and_matches_separate_runs() {
    let batches: Vec<Vec<f32>> = {
        let mut data = Synthetic::new(4);
        (0..12).map(|_| data.batch(64)).collect()
    };
    let mut a = small_topk_config(12);
    a.seed = 1;
    let mut b = small_topk_config(8);
    b.architecture = ArchConfig::ReluL1 {
        l1_coeff: 2.0,
        l1_warmup_fraction: 0.05,
    };
    let dir = tempfile::tempdir().unwrap();
    let member = |name: &str, config: &TrainConfig| FitMember {
        config: config.clone(),
        checkpoint_dir: dir.path().join(name).join("checkpoint"),
        metrics_path: dir.path().join(format!("{name}.jsonl")),
    };
    let members = [member("a", &a), member("b", &b)];
    let options = FitOptions {
        scale: 1.0,
        epochs: 1,
        batch_size: 64,
        checkpoint_every: 0,
        fingerprint: "sweep".into(),
    };
    let epoch_batches = batches.clone();
    let mut epoch = |_: u64| -> Result<Batches<SaeError>, SaeError> {
        Ok(Box::new(epoch_batches.clone().into_iter().map(Ok)))
    };
    let fitted = fit(&members, &options, &mut epoch, &mut Unobserved).unwrap();
    assert!(fitted.trainers.iter().all(Trainer::is_finished));
    assert_eq!(fitted.resumed_from_step, None);
    for (cfg, trained) in [a, b].into_iter().zip(&fitted.trainers) {
        let mut alone = Trainer::new(cfg, 1.0).unwrap();
        alone.train(&batches, |_| {}).unwrap();
        assert_eq!(
            alone.export(SaeMetadata::default()),
            trained.export(SaeMetadata::default())
        );
    }
}

/// Stops a fit after a number of steps, as a cancelled stage would.
struct StopAfter(u64);

impl FitObserver for StopAfter {
    fn stepped(&mut self, _main: Option<&StepMetrics>) {
        self.0 = self.0.saturating_sub(1);
    }
    fn cancelled(&self) -> bool {
        self.0 == 0
    }
}

#[test]
fn an_interrupted_fit_resumes_from_its_checkpoint_to_the_same_sae() {
    let batches: Vec<Vec<f32>> = {
        let mut data = Synthetic::new(5);
        (0..6).map(|_| data.batch(64)).collect()
    };
    let config = small_topk_config(12);
    let dir = tempfile::tempdir().unwrap();
    let members = [FitMember {
        config: config.clone(),
        checkpoint_dir: dir.path().join("checkpoint"),
        metrics_path: dir.path().join("metrics.jsonl"),
    }];
    let options = FitOptions {
        scale: 1.0,
        epochs: 2,
        batch_size: 64,
        checkpoint_every: 4,
        fingerprint: "run".into(),
    };
    let mut epoch = |_: u64| -> Result<Batches<SaeError>, SaeError> {
        Ok(Box::new(batches.clone().into_iter().map(Ok)))
    };
    let err = fit(&members, &options, &mut epoch, &mut StopAfter(7)).unwrap_err();
    assert!(matches!(err, SaeError::Cancelled), "{err}");
    let resumed = fit(&members, &options, &mut epoch, &mut Unobserved).unwrap();
    assert_eq!(resumed.resumed_from_step, Some(4));

    let fresh = tempfile::tempdir().unwrap();
    let alone = [FitMember {
        config,
        checkpoint_dir: fresh.path().join("checkpoint"),
        metrics_path: fresh.path().join("metrics.jsonl"),
    }];
    let whole = fit(&alone, &options, &mut epoch, &mut Unobserved).unwrap();
    assert_eq!(
        resumed.trainers[0].export(SaeMetadata::default()),
        whole.trainers[0].export(SaeMetadata::default())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(fresh.path().join("metrics.jsonl")).unwrap(),
        "the metrics of a resumed fit are those of an uninterrupted one"
    );

    // A checkpoint of another run is discarded, not resumed.
    std::fs::remove_dir_all(dir.path().join("checkpoint")).unwrap();
    let err = fit(&members, &options, &mut epoch, &mut StopAfter(5)).unwrap_err();
    assert!(matches!(err, SaeError::Cancelled), "{err}");
    let other = FitOptions {
        fingerprint: "another run".into(),
        ..options.clone()
    };
    let restarted = fit(&members, &other, &mut epoch, &mut Unobserved).unwrap();
    assert_eq!(restarted.resumed_from_step, None);
}

#[test]
fn evaluation_reports_consistent_statistics() {
    let (sae, mut data) = train(
        ArchConfig::TopK {
            k: 5,
            aux: AuxKConfig::default(),
        },
        Optimizer::Signum,
        128,
        200,
        None,
        128,
    );
    let rows = data.batch(1000);
    let r = evaluate(&sae, &rows, 0.1).unwrap();
    assert_eq!(r.tokens, 1000);
    assert!(r.l0 <= 5.0 && r.l0 > 0.0);
    assert!((r.fvu + r.explained_variance - 1.0).abs() < 1e-12);
    assert!(r.fvu > 0.0 && r.fvu < 1.0, "fvu {}", r.fvu);
    let mean_freq: f64 = r.feature_frequency.iter().sum();
    assert!((mean_freq - r.l0).abs() < 1e-9, "Σ frequency = L0");
    let histogram: u64 =
        r.density_histogram.counts.iter().sum::<u64>() + r.density_histogram.never_fired;
    assert_eq!(histogram, 128);
    assert!(r.feature_max_activation.iter().all(|&m| m >= 0.0));
    let json = serde_json::to_string(&r).unwrap();
    let back: monoscope_sae::EvalReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

/// A batch with one row far above the others, and the same batch without it.
fn with_massive_row(data: &mut Synthetic, rows: usize) -> (Vec<f32>, Vec<f32>) {
    let clean = data.batch(rows);
    let mut with = clean.clone();
    with.splice(3 * D_IN..3 * D_IN, vec![500.0f32; D_IN]);
    (with, clean)
}

#[test]
fn excluded_massive_rows_are_as_if_absent() {
    let mut data = Synthetic::new(6);
    let batches: Vec<(Vec<f32>, Vec<f32>)> =
        (0..6).map(|_| with_massive_row(&mut data, 64)).collect();
    let mut cfg = small_topk_config(6).with_optimizer(Optimizer::Signum);
    cfg.massive_norm = Some(100.0);
    cfg.exclude_massive = true;
    let mut excluding = Trainer::new(cfg.clone(), 0.8).unwrap();
    let mut last = None;
    excluding
        .train(batches.iter().map(|b| &b.0), |m| last = Some(m.clone()))
        .unwrap();
    let last = last.unwrap();
    assert!(last.massive_rows > 0, "{last:?}");
    cfg.exclude_massive = false;
    cfg.massive_norm = None;
    let mut absent = Trainer::new(cfg, 0.8).unwrap();
    absent.train(batches.iter().map(|b| &b.1), |_| {}).unwrap();
    let (a, b) = (
        excluding.export(SaeMetadata::default()),
        absent.export(SaeMetadata::default()),
    );
    // The weights; the metadata records the two configurations, which differ.
    assert_eq!(
        (a.w_enc, a.b_enc, a.w_dec, a.b_dec),
        (b.w_enc, b.b_enc, b.w_dec, b.b_dec)
    );
}

#[test]
fn evaluation_reports_massive_rows_apart() {
    let (sae, mut data) = train(
        ArchConfig::TopK {
            k: 5,
            aux: AuxKConfig::default(),
        },
        Optimizer::Signum,
        128,
        100,
        None,
        128,
    );
    let (with, clean) = with_massive_row(&mut data, 500);
    let mut ev = monoscope_sae::Evaluator::new(&sae, 0.1).with_massive_threshold(100.0);
    ev.add(&with).unwrap();
    let report = ev.finish();
    let m = report.massive.clone().expect("a threshold was given");
    let alone = evaluate(&sae, &clean, 0.1).unwrap();
    assert_eq!((m.rows, report.tokens), (1, 501));
    assert!(m.sq_norm_fraction > 0.9, "{m:?}");
    assert!(
        (m.fvu_without - alone.fvu).abs() < 1e-9,
        "{m:?} vs {}",
        alone.fvu
    );
    assert!((m.l0_without - alone.l0).abs() < 1e-9);
    assert!(m.fvu_without != report.fvu);
}

#[test]
fn a_calibrated_threshold_gives_the_asked_l0() {
    let (mut sae, mut data) = train(
        ArchConfig::BatchTopK {
            k: 5,
            threshold_lr: 0.01,
            aux: AuxKConfig::default(),
        },
        Optimizer::Signum,
        128,
        100,
        None,
        128,
    );
    let rows = data.batch(2000);
    let threshold = sae.calibrate_threshold(&rows, 5.0).unwrap();
    assert!(threshold > 0.0);
    let report = evaluate(&sae, &rows, 0.1).unwrap();
    assert!((report.l0 - 5.0).abs() < 1e-9, "L0 {}", report.l0);
    // Other rows of the same distribution land near it.
    let other = evaluate(&sae, &data.batch(2000), 0.1).unwrap();
    assert!((other.l0 - 5.0).abs() < 0.5, "L0 {}", other.l0);
}
