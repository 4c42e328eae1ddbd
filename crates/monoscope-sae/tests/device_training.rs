//! The device trainer (`Compute::Burn`) against the host trainer: the same configuration, seed
//! and batches give the same SAE, for every architecture and both optimizers, and checkpoints
//! cross between the two. The device is `monoscope_device::test_device()`
//! (`MONOSCOPE_TEST_DEVICE`, default burn's CPU backend); the burn path is named explicitly,
//! never through `Compute::for_device`, so that it is what runs even on the CPU.
//!
//! The measure of agreement, per exported tensor: `max|a − b| / max|a|` over its elements (`a`
//! the host's), at most [`PARAM_TOL`]; held-out metrics from `evaluate` and the training
//! reports within [`METRIC_TOL`] relative to `max(|a|, 1)`.
//!
//! Why the runs are set up as they are: the two paths' f32 pre-activations agree to about
//! 1e-7, not exactly (different summation orders), and every selection rule is discontinuous
//! (ReLU's and JumpReLU's gates, JumpReLU's STE window, TopK's k-th value, BatchTopK's τ). A
//! pre-activation within rounding of a boundary falls on different sides in the two runs,
//! that (row, latent) pair's whole gradient is in one and not the other, and Adam turns it
//! into a step difference of that latent of order 1e-3 relative (measured: ReLU+L1 from a
//! random start, z = −4.2e-9 at step 9). So each Adam run asserts [`MIN_MARGIN`]: from the
//! host's weights before every step, no pre-activation of the batch is that close to a
//! boundary (computed in f64), and a failure would be the algorithm, not the rounding. ReLU+L1
//! and JumpReLU start from planted SAEs on orthonormal features with coefficients away from
//! their gates (their pre-activations sit densely at the gate from a random start); TopK and
//! BatchTopK start at random.

use burn::tensor::FloatDType;
use monoscope_device::Device;
use monoscope_sae::train::{Batches, FitMember, FitOptions, Unobserved, fit, fit_on};
use monoscope_sae::{
    ArchConfig, AuxKConfig, Compute, EvalReport, Optimizer, Sae, SaeError, SaeMetadata,
    StepMetrics, TrainConfig, Trainer, estimate_input_scale, evaluate,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PARAM_TOL: f64 = 1e-4;
/// Smallest distance of a pre-activation to a selection boundary the Adam runs allow: ten
/// times the paths' disagreement on pre-activations of order 1.
const MIN_MARGIN: f64 = 2e-6;
const METRIC_TOL: f64 = 1e-3;
const STEPS: u64 = 50;
const D_IN: usize = 48;
const D_SAE: usize = 192;
const BATCH: usize = 128;
const N_TRUE: usize = 96;
/// Raw scale of the data: the input scale the trainers use is far from 1.
const RAW_SCALE: f32 = 3.0;

fn device() -> Device {
    monoscope_device::test_device().1
}

fn burn() -> Compute {
    Compute::Burn(device())
}

/// Sparse non-negative combinations of unit-norm planted features, plus noise; every
/// `massive_every`-th row of a batch (0: none) is 40 times longer.
struct Synthetic {
    features: Vec<f32>,
    rng: ChaCha8Rng,
    massive_every: usize,
}

impl Synthetic {
    fn new(seed: u64, massive_every: usize) -> Self {
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
            massive_every,
        }
    }

    fn batch(&mut self, rows: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * D_IN];
        for (r, row) in out.chunks_mut(D_IN).enumerate() {
            for f in 0..N_TRUE {
                if self.rng.random_bool(4.0 / N_TRUE as f64) {
                    let c = self.rng.random_range(0.5f32..1.5);
                    let feat = &self.features[f * D_IN..(f + 1) * D_IN];
                    row.iter_mut().zip(feat).for_each(|(r, v)| *r += c * v);
                }
            }
            row.iter_mut()
                .for_each(|r| *r = RAW_SCALE * (*r + self.rng.random_range(-0.02f32..0.02)));
            if self.massive_every > 0 && r % self.massive_every == self.massive_every - 1 {
                row.iter_mut().for_each(|v| *v *= 40.0);
            }
        }
        out
    }
}

/// One training setup: configuration, input scale, batches, held-out rows, and optionally a
/// planted SAE to start from.
struct Case {
    name: String,
    cfg: TrainConfig,
    scale: f32,
    batches: Vec<Vec<f32>>,
    held_out: Vec<f32>,
    start: Option<Sae>,
}

impl Case {
    fn new(name: &str, arch: ArchConfig, optimizer: Optimizer, seed: u64) -> Case {
        let mut data = Synthetic::new(seed, 0);
        let scale = estimate_input_scale(&data.batch(1024), D_IN).expect("a scale");
        let mut cfg = TrainConfig::new(D_IN, D_SAE, arch, STEPS)
            .with_optimizer(optimizer)
            .for_batch(BATCH);
        cfg.seed = seed;
        cfg.lr_warmup_steps = 3;
        // A decaying rate over the last 30% of the run, for both optimizers.
        cfg.lr_decay_fraction = 0.3;
        cfg.metrics_every = 5;
        cfg.dead_after_tokens = 4 * BATCH as u64;
        let batches = (0..STEPS).map(|_| data.batch(BATCH)).collect();
        let held_out = data.batch(1024);
        Case {
            name: format!("{name} {optimizer:?}"),
            cfg,
            scale,
            batches,
            held_out,
            start: None,
        }
    }

    /// Some rows of every batch massive, with the threshold set (and those rows left out of
    /// training when `exclude`).
    fn with_massive_rows(mut self, seed: u64, exclude: bool) -> Case {
        let mut data = Synthetic::new(seed, 16);
        self.batches = (0..STEPS).map(|_| data.batch(BATCH)).collect();
        self.cfg.massive_norm = Some(10.0 * RAW_SCALE * 2.0);
        self.cfg.exclude_massive = exclude;
        self
    }

    fn trainer(&self, compute: Compute) -> Trainer {
        let t = match &self.start {
            None => Trainer::new_on(self.cfg.clone(), self.scale, compute.clone()),
            Some(sae) => Trainer::from_sae_on(self.cfg.clone(), sae, self.scale, compute.clone()),
        }
        .expect("a trainer");
        assert_eq!(
            t.compute(),
            &compute,
            "{}: the trainer computes elsewhere",
            self.name
        );
        t
    }
}

/// Steps `trainer` over `batches`, collecting its reports.
fn train(trainer: &mut Trainer, batches: &[Vec<f32>]) -> Vec<StepMetrics> {
    let mut reports = Vec::new();
    trainer
        .train(batches, |m| reports.push(m.clone()))
        .expect("training");
    reports
}

/// `max|a − b| / max|a|`; exact equality is asked of a tensor that is all zeros.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
    if scale == 0.0 {
        if diff == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        diff / scale
    }
}

/// The largest relative difference over the exported tensors; panics above [`PARAM_TOL`].
fn assert_same_sae(name: &str, a: &Sae, b: &Sae) -> f64 {
    assert_eq!(a.architecture, b.architecture, "{name}");
    let mut tensors = vec![
        ("W_enc", &a.w_enc, &b.w_enc),
        ("b_enc", &a.b_enc, &b.b_enc),
        ("W_dec", &a.w_dec, &b.w_dec),
        ("b_dec", &a.b_dec, &b.b_dec),
    ];
    assert_eq!(a.threshold.is_some(), b.threshold.is_some(), "{name}");
    if let (Some(ta), Some(tb)) = (&a.threshold, &b.threshold) {
        tensors.push(("threshold", ta, tb));
    }
    let mut worst = 0.0f64;
    for (key, x, y) in tensors {
        let r = rel_diff(x, y);
        assert!(
            r <= PARAM_TOL,
            "{name}: `{key}` differs by {r:.3e} (max|a−b| / max|a|) > {PARAM_TOL:e}"
        );
        worst = worst.max(r);
    }
    worst
}

fn close(name: &str, what: &str, a: f64, b: f64) {
    let tol = METRIC_TOL * a.abs().max(1.0);
    assert!(
        (a - b).abs() <= tol,
        "{name}: {what} {a} (host) vs {b} (device) differ by more than {tol:e}"
    );
}

fn assert_same_eval(name: &str, a: &EvalReport, b: &EvalReport) {
    close(name, "held-out l0", a.l0, b.l0);
    close(name, "held-out mse", a.mse, b.mse);
    close(name, "held-out fvu", a.fvu, b.fvu);
    close(
        name,
        "held-out dead fraction",
        a.dead_fraction,
        b.dead_fraction,
    );
    close(
        name,
        "held-out dense fraction",
        a.dense_fraction,
        b.dense_fraction,
    );
}

fn assert_same_reports(name: &str, a: &[StepMetrics], b: &[StepMetrics]) {
    assert_eq!(a.len(), b.len(), "{name}: reports");
    for (a, b) in a.iter().zip(b) {
        let at = format!("step {}", a.step);
        assert_eq!(
            (a.step, a.tokens, a.massive_rows),
            (b.step, b.tokens, b.massive_rows)
        );
        assert_eq!(
            (a.lr, a.sparsity_coeff),
            (b.lr, b.sparsity_coeff),
            "{name} {at}"
        );
        for (what, x, y) in [
            ("loss", a.loss, b.loss),
            ("mse loss", a.mse_loss, b.mse_loss),
            ("sparsity loss", a.sparsity_loss, b.sparsity_loss),
            ("aux loss", a.aux_loss, b.aux_loss),
            ("fvu", a.fvu, b.fvu),
            ("l0", a.l0, b.l0),
            ("dead fraction", a.dead_fraction, b.dead_fraction),
            ("dense fraction", a.dense_fraction, b.dense_fraction),
            ("grad norm", a.grad_norm, b.grad_norm),
        ] {
            close(name, &format!("{what} at {at}"), x, y);
        }
        match (a.fvu_without_massive, b.fvu_without_massive) {
            (Some(x), Some(y)) => close(name, &format!("fvu without massive at {at}"), x, y),
            (x, y) => assert_eq!(x.is_some(), y.is_some(), "{name} {at}"),
        }
        match (a.batchtopk_threshold, b.batchtopk_threshold) {
            (Some(x), Some(y)) => close(name, &format!("batchtopk threshold at {at}"), x, y),
            (x, y) => assert_eq!(x.is_some(), y.is_some(), "{name} {at}"),
        }
    }
}

/// Trains `case` on the host and on the device; asserts they agree and returns the host's
/// reports and the largest parameter difference.
fn compare(case: &Case) -> (Vec<StepMetrics>, f64) {
    let mut host = case.trainer(Compute::Host);
    let mut dev = case.trainer(burn());
    let mut host_reports = Vec::new();
    let mut min_margin = f64::INFINITY;
    for batch in &case.batches {
        // With schedule-free sign descent the export is the average, not the point the
        // gradients are taken at: only Adam's margins are checked.
        if case.cfg.optimizer == Optimizer::Adam {
            let sae = host.export(SaeMetadata::default());
            min_margin = min_margin.min(margin(&case.cfg, &sae, batch));
        }
        host_reports.extend(host.step(batch).expect("a host step"));
    }
    assert!(
        min_margin >= MIN_MARGIN,
        "{}: a pre-activation comes within {min_margin:e} of a selection boundary: the \
         comparison would test rounding; change the seed or the setup",
        case.name
    );
    let dev_reports = train(&mut dev, &case.batches);
    assert!(host.is_finished() && dev.is_finished());
    assert!(matches!(dev.compute(), Compute::Burn(_)));
    let a = host.export(SaeMetadata::default());
    let b = dev.try_export(SaeMetadata::default()).expect("export");
    let worst = assert_same_sae(&case.name, &a, &b);
    assert_same_reports(&case.name, &host_reports, &dev_reports);
    let threshold = case.cfg.massive_norm;
    let eval = |sae: &Sae| -> EvalReport {
        let mut e = monoscope_sae::Evaluator::new(sae, 0.1);
        if let Some(t) = threshold {
            e = e.with_massive_threshold(t);
        }
        e.add(&case.held_out).expect("evaluate");
        e.finish()
    };
    let (ea, eb) = (eval(&a), eval(&b));
    assert_same_eval(&case.name, &ea, &eb);
    let plain = (
        evaluate(&a, &case.held_out, 0.1).unwrap(),
        evaluate(&b, &case.held_out, 0.1).unwrap(),
    );
    assert_same_eval(&case.name, &plain.0, &plain.1);
    eprintln!(
        "{}: max relative parameter difference {worst:.3e}; held-out fvu {:.5} / {:.5}; \
         smallest margin {min_margin:.2e}",
        case.name, ea.fvu, eb.fvu
    );
    (host_reports, worst)
}

fn topk(optimizer: Optimizer) -> Case {
    let arch = ArchConfig::TopK {
        k: 8,
        aux: AuxKConfig {
            coeff: 1.0 / 32.0,
            k_aux: Some(24),
        },
    };
    // Massive rows left out of training; a short dead window so that latents die and AuxK
    // trains them.
    let mut case = Case::new("topk+auxk", arch, optimizer, 11).with_massive_rows(12, true);
    case.cfg.dead_after_tokens = 2 * BATCH as u64;
    case
}

fn batch_topk(optimizer: Optimizer) -> Case {
    let arch = ArchConfig::BatchTopK {
        k: 8,
        threshold_lr: 0.05,
        aux: AuxKConfig::default(),
    };
    // Massive rows trained on, and reported apart.
    Case::new("batchtopk", arch, optimizer, 21).with_massive_rows(22, false)
}

/// A planted setup on `D_IN` orthonormal features, two latents each (`W_enc` columns the
/// features plus a small perturbation, decoder rows half of them): each feature is present
/// in a row with probability `density`, at a weak (0.7) or strong (1.5) coefficient with a
/// little jitter, so that the pre-activations cluster at −b_enc-shifted 0, 0.7 and 1.5 and
/// stay away from the gates placed between them.
fn planted(name: &str, arch: ArchConfig, optimizer: Optimizer, density: f64, seed: u64) -> Case {
    let d = D_IN;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Gram–Schmidt on random vectors, in f64.
    let mut basis: Vec<Vec<f64>> = Vec::new();
    while basis.len() < d {
        let mut v: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        for b in &basis {
            let along: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= along * y);
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        basis.push(v);
    }
    let mut batch = |rows: usize| -> Vec<f32> {
        let mut out = vec![0.0f64; rows * d];
        for row in out.chunks_mut(d) {
            for f in &basis {
                if rng.random_bool(density) {
                    let c = if rng.random_bool(0.5) { 0.7 } else { 1.5 };
                    let c = c + rng.random_range(-0.02..0.02);
                    row.iter_mut().zip(f).for_each(|(r, v)| *r += c * v);
                }
            }
            row.iter_mut()
                .for_each(|r| *r += rng.random_range(-0.003..0.003));
        }
        out.into_iter().map(|v| v as f32).collect()
    };
    let scale = estimate_input_scale(&batch(1024), d).expect("a scale");
    let mut cfg = TrainConfig::new(d, 2 * d, arch, STEPS)
        .with_optimizer(optimizer)
        .for_batch(BATCH);
    cfg.seed = seed;
    cfg.lr_warmup_steps = 3;
    cfg.lr_decay_fraction = 0.3;
    cfg.metrics_every = 5;
    cfg.dead_after_tokens = 4 * BATCH as u64;
    let batches = (0..STEPS).map(|_| batch(BATCH)).collect();
    let held_out = batch(1024);
    let mut sae = Trainer::new(cfg.clone(), scale)
        .expect("a trainer")
        .export(SaeMetadata::default());
    let s = 2 * d;
    for i in 0..s {
        let f = &basis[i % d];
        let u: Vec<f64> = f
            .iter()
            .map(|v| v + 0.0005 * rng.random_range(-1.0..1.0))
            .collect();
        for (j, &u) in u.iter().enumerate() {
            sae.w_enc[j * s + i] = u as f32;
            sae.w_dec[i * d + j] = (u / 2.0) as f32;
        }
    }
    sae.b_dec.fill(0.0);
    Case {
        name: format!("{name} {optimizer:?}"),
        cfg,
        scale,
        batches,
        held_out,
        start: Some(sae),
    }
}

/// ReLU+L1 from a planted SAE with `b_enc` = −0.35: absent features at −0.35, present ones
/// at 0.35 and 1.15. At `density` 0.3 the host takes its dense path, at 0.03 its sparse one.
fn relu_l1(optimizer: Optimizer, density: f64) -> Case {
    let arch = ArchConfig::ReluL1 {
        l1_coeff: 2.0,
        l1_warmup_fraction: 0.2,
    };
    let path = if density > 0.05 { "dense" } else { "sparse" };
    let mut case = planted(
        &format!("relu+l1 ({path} path)"),
        arch,
        optimizer,
        density,
        31,
    );
    if let Some(sae) = &mut case.start {
        sae.b_enc.fill(-0.35);
    }
    if density <= 0.05 {
        // The decoder kept at unit norm on this one.
        case.cfg.normalize_decoder = Some(true);
    }
    case
}

/// JumpReLU from a planted SAE with θ = 0.75 and bandwidth 0.3: the weak coefficients
/// (0.7) sit inside the STE window (0.6, 0.9) below θ, the strong ones (1.5) above it.
fn jumprelu(optimizer: Optimizer) -> Case {
    let arch = ArchConfig::JumpRelu {
        l0_coeff: 0.5,
        bandwidth: 0.3,
        init_threshold: 0.75,
        l0_warmup_fraction: 0.1,
    };
    let mut case = planted("jumprelu", arch, optimizer, 0.2, 41);
    // The L0 penalty's straight-through gradient on a latent's bias is a sum of window terms
    // of both signs that can cancel to rounding level; Adam would turn that residue into a full
    // step whose sign is the rounding's (as seen on wgpu's products). An eps above that level
    // keeps rounding-sized gradients from stepping, on both engines alike.
    case.cfg.adam.eps = 1e-5;
    if let Some(sae) = &mut case.start {
        sae.b_enc.fill(0.0);
        sae.threshold = Some(vec![0.75; sae.d_sae]);
    }
    case
}

#[test]
fn topk_with_auxk_matches_the_host() {
    for optimizer in [Optimizer::Adam, Optimizer::Signum] {
        let (reports, _) = compare(&topk(optimizer));
        assert!(
            reports.iter().any(|m| m.aux_loss > 0.0),
            "no latent went dead: AuxK never acted"
        );
        assert!(reports.iter().any(|m| m.dead_fraction > 0.0));
        assert!(reports.iter().all(|m| m.massive_rows > 0));
    }
}

#[test]
fn batch_topk_matches_the_host() {
    for optimizer in [Optimizer::Adam, Optimizer::Signum] {
        let (reports, _) = compare(&batch_topk(optimizer));
        assert!(reports.iter().all(|m| m.batchtopk_threshold.is_some()));
        assert!(reports.iter().all(|m| m.fvu_without_massive.is_some()));
    }
}

#[test]
fn relu_l1_matches_the_host_on_its_dense_path() {
    for optimizer in [Optimizer::Adam, Optimizer::Signum] {
        let (reports, _) = compare(&relu_l1(optimizer, 0.3));
        // The host takes its dense path while more than 5% of the codes are active.
        assert!(
            reports[0].l0 / (2 * D_IN) as f64 > 0.05,
            "l0 {}",
            reports[0].l0
        );
    }
}

#[test]
fn relu_l1_matches_the_host_on_its_sparse_path() {
    for optimizer in [Optimizer::Adam, Optimizer::Signum] {
        let (reports, _) = compare(&relu_l1(optimizer, 0.03));
        assert!(
            reports.iter().all(|m| m.l0 / (2 * D_IN) as f64 <= 0.05),
            "codes too dense for the host's sparse path: {:?}",
            reports.iter().map(|m| m.l0).collect::<Vec<_>>()
        );
        assert!(reports.iter().any(|m| m.l0 > 0.0));
    }
}

#[test]
fn jumprelu_matches_the_host() {
    // Adam only, JumpReLU's optimizer in the recipe. Under sign descent every component of
    // the L0 penalty's straight-through gradient that cancels to rounding level still steps
    // by the full rate, its sign set by the rounding: on wgpu a tenth of W_enc moved apart.
    // No eps can damp a sign, so that pairing is not comparable across engines.
    compare(&jumprelu(Optimizer::Adam));
}

/// Steps `trainer` over `batches[from..]` until it is finished.
fn finish(trainer: &mut Trainer, batches: &[Vec<f32>]) {
    let from = trainer.step_count() as usize;
    train(trainer, &batches[from..]);
    assert!(trainer.is_finished());
}

#[test]
fn checkpoints_cross_between_host_and_device() {
    for case in [
        topk(Optimizer::Adam),
        batch_topk(Optimizer::Signum),
        jumprelu(Optimizer::Adam),
        relu_l1(Optimizer::Adam, 0.3),
    ] {
        let mut all_host = case.trainer(Compute::Host);
        finish(&mut all_host, &case.batches);
        let want = all_host.export(SaeMetadata::default());
        let half = &case.batches[..STEPS as usize / 2];
        let tmp = tempfile::tempdir().unwrap();
        let (host_dir, dev_dir) = (tmp.path().join("host"), tmp.path().join("device"));
        let position = serde_json::json!({ "batches": half.len() });

        // Host writes at step 25, the device resumes.
        let mut host = case.trainer(Compute::Host);
        train(&mut host, half);
        host.save_checkpoint(&host_dir, position.clone()).unwrap();
        let (mut resumed, at) = Trainer::resume_on(&host_dir, burn()).unwrap();
        assert_eq!(at, position);
        assert!(matches!(resumed.compute(), Compute::Burn(_)));
        assert_eq!(resumed.step_count(), STEPS / 2);
        finish(&mut resumed, &case.batches);
        let got = resumed.try_export(SaeMetadata::default()).unwrap();
        let w1 = assert_same_sae(&format!("{} host → device", case.name), &want, &got);

        // The device writes at step 25, the host resumes.
        let mut dev = case.trainer(burn());
        train(&mut dev, half);
        dev.save_checkpoint(&dev_dir, position.clone()).unwrap();
        let (mut resumed, _) = Trainer::resume(&dev_dir).unwrap();
        assert_eq!(resumed.compute(), &Compute::Host);
        finish(&mut resumed, &case.batches);
        let got = resumed.export(SaeMetadata::default());
        let w2 = assert_same_sae(&format!("{} device → host", case.name), &want, &got);
        eprintln!(
            "{}: host → device {w1:.3e}, device → host {w2:.3e}",
            case.name
        );

        // The same files, the same tensors in them.
        assert_same_layout(&host_dir, &dev_dir);
    }
}

fn assert_same_layout(a: &std::path::Path, b: &std::path::Path) {
    let names = |dir: &std::path::Path| {
        let mut n: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(a), names(b));
    let (fa, fb) = (
        std::fs::read(a.join("state.safetensors")).unwrap(),
        std::fs::read(b.join("state.safetensors")).unwrap(),
    );
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&fa).unwrap(),
        safetensors::SafeTensors::deserialize(&fb).unwrap(),
    );
    let layout = |s: &safetensors::SafeTensors| {
        let mut v: Vec<_> = s
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, t.dtype(), t.shape().to_vec()))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(layout(&sa), layout(&sb));
    let keys = |dir: &std::path::Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("trainer.json")).unwrap()).unwrap();
        v.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(keys(a), keys(b));
}

#[test]
fn the_device_path_is_taken_when_asked_for() {
    let case = topk(Optimizer::Adam);
    // `for_device` keeps the host kernels on burn's CPU device only.
    assert_eq!(Compute::for_device(&Device::flex()), Compute::Host);
    let device = device();
    let expected = if device == Device::flex() {
        Compute::Host
    } else {
        Compute::Burn(device.clone())
    };
    assert_eq!(Compute::for_device(&device), expected);
    // Asked for explicitly, the burn path is taken on every device, the CPU included.
    let fresh = case.trainer(burn());
    assert_eq!(fresh.compute(), &Compute::Burn(device.clone()));
    let sae = fresh.try_export(SaeMetadata::default()).unwrap();
    let planted = Trainer::from_sae_on(case.cfg.clone(), &sae, case.scale, burn()).unwrap();
    assert!(matches!(planted.compute(), Compute::Burn(_)));
    let tmp = tempfile::tempdir().unwrap();
    fresh
        .save_checkpoint(tmp.path(), serde_json::Value::Null)
        .unwrap();
    let (resumed, _) = Trainer::resume_on(tmp.path(), burn()).unwrap();
    assert!(matches!(resumed.compute(), Compute::Burn(_)));
    // The host's trainers say so too.
    assert_eq!(case.trainer(Compute::Host).compute(), &Compute::Host);
    assert_eq!(
        Trainer::new(case.cfg.clone(), case.scale)
            .unwrap()
            .compute(),
        &Compute::Host
    );
}

/// `fit_on` trains on the device and writes what `fit` writes, from checkpoints of either.
#[test]
fn a_fit_on_the_device_matches_the_host_fit() {
    let case = topk(Optimizer::Adam);
    let batches = case.batches.clone();
    let run = |dir: &std::path::Path, compute: Option<&Compute>, stop_after: Option<u64>| {
        let member = FitMember {
            config: case.cfg.clone(),
            checkpoint_dir: dir.join("checkpoint"),
            metrics_path: dir.join("metrics.jsonl"),
        };
        let options = FitOptions {
            scale: case.scale,
            epochs: 1,
            batch_size: BATCH,
            checkpoint_every: 10,
            fingerprint: "device-test".into(),
        };
        let batches = batches.clone();
        let mut epoch = move |_e: u64| -> Result<Batches<SaeError>, SaeError> {
            let limit = stop_after.map_or(usize::MAX, |s| s as usize);
            Ok(Box::new(batches.clone().into_iter().take(limit).map(Ok)))
        };
        let members = [member];
        match compute {
            None => fit(&members, &options, &mut epoch, &mut Unobserved),
            Some(c) => fit_on(&members, &options, c, &mut epoch, &mut Unobserved),
        }
        .expect("fit")
    };
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["host", "device", "mixed"] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    let host = run(&tmp.path().join("host"), None, None);
    let dev = run(&tmp.path().join("device"), Some(&burn()), None);
    assert!(matches!(dev.trainers[0].compute(), Compute::Burn(_)));
    let want = host.trainers[0].export(SaeMetadata::default());
    assert_same_sae(
        "fit",
        &want,
        &dev.trainers[0].try_export(SaeMetadata::default()).unwrap(),
    );
    let lines = |dir: &str| {
        std::fs::read_to_string(tmp.path().join(dir).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines("host"), lines("device"));

    // Interrupted on the host after 25 batches (checkpoint at 20), finished on the device.
    let mixed = tmp.path().join("mixed");
    let first = run(&mixed, None, Some(25));
    assert_eq!(first.trainers[0].step_count(), 25);
    let second = run(&mixed, Some(&burn()), None);
    assert_eq!(second.resumed_from_step, Some(20));
    assert!(matches!(second.trainers[0].compute(), Compute::Burn(_)));
    assert_same_sae(
        "fit host → device",
        &want,
        &second.trainers[0]
            .try_export(SaeMetadata::default())
            .unwrap(),
    );
}

/// The smallest distance, over the pairs of `batch`, of a pre-activation to a boundary of the
/// selection a step from `sae`'s weights makes (in f64; AuxK's selection not included).
fn margin(cfg: &TrainConfig, sae: &Sae, batch: &[f32]) -> f64 {
    let (d, s) = (sae.d_in, sae.d_sae);
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for x in batch.chunks(d) {
        if cfg.exclude_massive {
            let norm = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            if norm > f64::from(cfg.massive_norm.unwrap()) {
                continue;
            }
        }
        let mut z: Vec<f64> = sae.b_enc.iter().map(|&b| f64::from(b)).collect();
        for (j, (&x, &b)) in x.iter().zip(&sae.b_dec).enumerate() {
            let xc = f64::from(x) - f64::from(b);
            for (l, z) in z.iter_mut().enumerate() {
                *z += xc * f64::from(sae.w_enc[j * s + l]);
            }
        }
        rows.push(z);
    }
    let desc = |v: &mut Vec<f64>| v.sort_by(|a, b| b.total_cmp(a));
    match &cfg.architecture {
        ArchConfig::ReluL1 { .. } => rows
            .iter()
            .flatten()
            .fold(f64::INFINITY, |m, z| m.min(z.abs())),
        ArchConfig::TopK { k, .. } => rows
            .iter()
            .map(|r| {
                let mut v = r.clone();
                desc(&mut v);
                let zero = v[..=*k].iter().fold(f64::INFINITY, |m, z| m.min(z.abs()));
                zero.min(v[k - 1] - v[*k])
            })
            .fold(f64::INFINITY, f64::min),
        ArchConfig::BatchTopK { k, .. } => {
            let budget = k * rows.len();
            let mut v: Vec<f64> = rows
                .iter()
                .flatten()
                .copied()
                .filter(|z| *z > 0.0)
                .collect();
            desc(&mut v);
            if v.len() > budget {
                v[budget - 1] - v[budget]
            } else {
                0.0
            }
        }
        ArchConfig::JumpRelu { bandwidth, .. } => {
            let eps = f64::from(*bandwidth);
            let theta = sae.threshold.as_ref().unwrap();
            rows.iter()
                .flat_map(|r| r.iter().zip(theta))
                .fold(f64::INFINITY, |m, (z, t)| {
                    let u = z - f64::from(*t);
                    m.min(u.abs()).min((u.abs() - 0.5 * eps).abs())
                })
        }
    }
}

/// 16-bit products against f32 products on the same device, after [`STEPS`] steps: held-out
/// FVU within `HALF_FVU_TOL` of the f32 run's and the decoder within `HALF_PARAM_TOL`
/// (`max|a − b| / max|a|`). Not the 1e-4 of the f32 comparisons: every product rounds its
/// operands to 11 (f16) or 8 (bf16) significant bits, and TopK's selection follows.
const HALF_FVU_TOL: f64 = 0.005;
const HALF_PARAM_TOL: f64 = 0.03;

#[test]
fn half_products_follow_f32_products() {
    let device = device();
    let arch = ArchConfig::TopK {
        k: 8,
        aux: AuxKConfig {
            coeff: 1.0 / 32.0,
            k_aux: Some(24),
        },
    };
    let case = Case::new("topk", arch, Optimizer::Adam, 21);
    let mut reference = case.trainer(burn());
    train(&mut reference, &case.batches);
    let a = reference.try_export(SaeMetadata::default()).unwrap();
    let fvu_f32 = evaluate(&a, &case.held_out, 0.1).unwrap().fvu;
    let mut checked = 0;
    for dtype in [FloatDType::F16, FloatDType::BF16] {
        let compute = match Compute::for_device_with_products(&device, Some(dtype)) {
            Ok(compute) => compute,
            Err(e) if device == Device::flex() => {
                // The CPU trains with its f32 host kernels: refused as a setting. burn's CPU
                // backend has the 16-bit products (slowly), so the engine is checked there.
                assert!(e.to_string().contains("for GPU devices"), "{e}");
                Compute::BurnHalf(device.clone(), dtype)
            }
            Err(e) => {
                // A device may lack the type's product (wgpu has no bf16): refused by name.
                let text = e.to_string();
                assert!(
                    text.contains(&format!("no {dtype:?} matrix product")),
                    "{text}"
                );
                println!("the test device refuses {dtype:?} products: {text}");
                continue;
            }
        };
        let mut half = case.trainer(compute);
        let reports = train(&mut half, &case.batches);
        assert!(half.is_finished() && reports.iter().all(|r| r.fvu.is_finite()));
        let b = half.try_export(SaeMetadata::default()).unwrap();
        let fvu = evaluate(&b, &case.held_out, 0.1).unwrap().fvu;
        let w_dec = rel_diff(&a.w_dec, &b.w_dec);
        println!("{dtype:?} products: held-out fvu {fvu:.5} (f32 {fvu_f32:.5}), W_dec {w_dec:.3e}");
        assert!(
            (fvu - fvu_f32).abs() <= HALF_FVU_TOL,
            "{dtype:?}: held-out fvu {fvu} against {fvu_f32} with f32 products"
        );
        assert!(
            w_dec <= HALF_PARAM_TOL,
            "{dtype:?}: W_dec differs by {w_dec:.3e}"
        );
        // Narrower products are not the same products: the difference is there to see.
        assert!(w_dec > 0.0, "{dtype:?}: the products did not change");
        checked += 1;
    }
    assert!(checked > 0, "no 16-bit product type was checked");
}
