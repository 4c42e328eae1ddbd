//! Analytic gradients against central finite differences of the loss itself. The losses
//! are piecewise quadratic in each weight (for a fixed set of active latents), so central
//! differences are exact up to rounding as long as no latent switches on or off; the
//! shapes are tiny and the step small so that none does.
// Index loops mirror the formulas they check.
#![allow(clippy::needless_range_loop)]
use super::*;
use crate::kernels::dot;
use crate::train::config::{AuxKConfig, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 6;
const S: usize = 10;
const B: usize = 7;

fn setup(arch: ArchConfig, seed: u64) -> (TrainConfig, Params, Vec<f32>) {
    let cfg = TrainConfig::new(D, S, arch, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let jump = matches!(cfg.architecture, ArchConfig::JumpRelu { .. });
    let mut p = Params::zeros(D, S, jump);
    for t in p.tensors_mut() {
        t.iter_mut().for_each(|v| *v = rng.random_range(-0.6..0.6));
    }
    p.threshold.iter_mut().for_each(|t| *t = t.abs() + 0.05);
    let x = (0..B * D).map(|_| rng.random_range(-1.5..1.5)).collect();
    (cfg, p, x)
}

fn run(
    p: &Params,
    cfg: &TrainConfig,
    x: &[f32],
    coeff: f32,
    dead: Option<&[bool]>,
    path: Path,
) -> (BatchStats, Params) {
    let mut g = Params::zeros(D, S, !p.threshold.is_empty());
    let stats = loss_and_grads_on(
        p,
        cfg,
        x,
        coeff,
        dead,
        &mut g,
        &mut Scratch::default(),
        path,
    );
    (stats, g)
}

/// Checks every weight and bias (not the threshold, whose gradient is a pseudo-gradient).
fn check(arch: ArchConfig, coeff: f32, dead: Option<&[bool]>) {
    check_on(arch, coeff, dead, Path::Auto, 0.0);
}

/// As `check`, on the given path, with `b_enc_shift` added to every encoder bias (a negative
/// shift makes the codes sparse).
fn check_on(arch: ArchConfig, coeff: f32, dead: Option<&[bool]>, path: Path, b_enc_shift: f32) {
    let loss = |p: &Params, cfg: &TrainConfig, x: &[f32], coeff: f32, dead: Option<&[bool]>| {
        run(p, cfg, x, coeff, dead, path).0.loss()
    };
    for seed in 0..3 {
        let (cfg, mut p, x) = setup(arch.clone(), seed);
        p.b_enc.iter_mut().for_each(|b| *b += b_enc_shift);
        let (stats, g) = run(&p, &cfg, &x, coeff, dead, path);
        assert!(stats.loss().is_finite());
        let h = 1e-3f32;
        for (ti, name) in ["w_enc_t", "b_enc", "w_dec", "b_dec"].iter().enumerate() {
            for j in 0..p.tensors()[ti].len() {
                let mut plus = p.clone();
                plus.tensors_mut()[ti][j] += h;
                let mut minus = p.clone();
                minus.tensors_mut()[ti][j] -= h;
                let (lp, l0, lm) = (
                    loss(&plus, &cfg, &x, coeff, dead),
                    stats.loss(),
                    loss(&minus, &cfg, &x, coeff, dead),
                );
                let h = f64::from(h);
                let central = (lp - lm) / (2.0 * h);
                let an = f64::from(g.tensors()[ti][j]);
                let close = |fd: f64, tol: f64| (fd - an).abs() <= tol * (1.0 + an.abs());
                // A latent switching on or off inside [−h, h] spoils the central difference
                // but leaves one of the one-sided ones clean (first-order accurate).
                let ok = close(central, 2e-3)
                    || close((lp - l0) / h, 1e-2)
                    || close((l0 - lm) / h, 1e-2);
                assert!(
                    ok,
                    "{arch:?} seed {seed}: {name}[{j}] analytic {an} vs finite differences \
                     {central} / {} / {}",
                    (lp - l0) / h,
                    (l0 - lm) / h
                );
            }
        }
    }
}

#[test]
fn relu_l1_gradients_match_finite_differences() {
    let arch = ArchConfig::ReluL1 {
        l1_coeff: 0.7,
        l1_warmup_fraction: 0.0,
    };
    check(arch, 0.7, None);
}

#[test]
fn relu_l1_sparse_path_gradients_match_finite_differences() {
    let arch = ArchConfig::ReluL1 {
        l1_coeff: 0.7,
        l1_warmup_fraction: 0.0,
    };
    check_on(arch.clone(), 0.7, None, Path::Sparse, -0.5);
    check_on(arch, 0.7, None, Path::Sparse, 0.0);
}

/// Both paths compute the same ReLU+L1 loss and gradients, dense codes or sparse.
#[test]
fn relu_l1_sparse_and_dense_paths_agree() {
    let arch = ArchConfig::ReluL1 {
        l1_coeff: 0.7,
        l1_warmup_fraction: 0.0,
    };
    for (seed, shift) in [(0, 0.0), (1, -0.3), (2, -0.6), (3, 0.4)] {
        let (cfg, mut p, x) = setup(arch.clone(), seed);
        p.b_enc.iter_mut().for_each(|b| *b += shift);
        let (ds, dg) = run(&p, &cfg, &x, 0.7, None, Path::Dense);
        let (ss, sg) = run(&p, &cfg, &x, 0.7, None, Path::Sparse);
        assert!(ds.active > 0, "seed {seed}: nothing active");
        assert_eq!(
            (ds.active, &ds.fired),
            (ss.active, &ss.fired),
            "seed {seed}"
        );
        for (a, b) in [
            (ds.mse_loss, ss.mse_loss),
            (ds.sparsity_loss, ss.sparsity_loss),
            (ds.sq_err, ss.sq_err),
            (f64::from(ds.min_active), f64::from(ss.min_active)),
        ] {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "seed {seed}: {a} vs {b}"
            );
        }
        for (ti, (a, b)) in dg.tensors().iter().zip(sg.tensors()).enumerate() {
            for (j, (a, b)) in a.iter().zip(b.iter()).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "seed {seed}: tensor {ti}[{j}] {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn topk_gradients_match_finite_differences_with_auxk() {
    let arch = ArchConfig::TopK {
        k: 3,
        aux: AuxKConfig {
            coeff: 0.5,
            k_aux: Some(2),
        },
    };
    check(arch, 0.0, None);
}

/// AuxK's target, the residual, carries no gradient (`e.detach()` in sparsify), so the
/// finite differences are taken of an independent plain-loop implementation of the loss
/// with the residual frozen at the unperturbed parameters.
#[test]
fn auxk_gradients_match_finite_differences_of_a_reference() {
    let (k, k_aux, alpha) = (3usize, 2usize, 0.5f32);
    let arch = ArchConfig::TopK {
        k,
        aux: AuxKConfig {
            coeff: alpha,
            k_aux: Some(k_aux),
        },
    };
    let dead: Vec<bool> = (0..S).map(|i| i % 3 == 0).collect();
    let n_dead = dead.iter().filter(|&&d| d).count();
    let scale = (n_dead as f64 / k_aux as f64).min(1.0);
    // Returns (loss, residual) with the aux target `r0` when given.
    let reference = |p: &Params, x: &[f32], r0: Option<&[f64]>| -> (f64, Vec<f64>) {
        let (mut total, mut resid) = (0.0, Vec::new());
        for b in 0..B {
            let xb = &x[b * D..(b + 1) * D];
            let z: Vec<f64> = (0..S)
                .map(|i| {
                    f64::from(p.b_enc[i])
                        + (0..D)
                            .map(|r| {
                                f64::from(xb[r] - p.b_dec[r]) * f64::from(p.w_enc_t[i * D + r])
                            })
                            .sum::<f64>()
                })
                .collect();
            let pick = |allowed: &dyn Fn(usize) -> bool, n: usize| -> Vec<usize> {
                let mut idx: Vec<usize> = (0..S).filter(|&i| allowed(i)).collect();
                idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
                idx.truncate(n);
                idx.retain(|&i| z[i] > 0.0);
                idx
            };
            let decode = |set: &[usize], bias: bool| -> Vec<f64> {
                (0..D)
                    .map(|r| {
                        let b0 = if bias { f64::from(p.b_dec[r]) } else { 0.0 };
                        b0 + set
                            .iter()
                            .map(|&i| z[i] * f64::from(p.w_dec[i * D + r]))
                            .sum::<f64>()
                    })
                    .collect()
            };
            let xhat = decode(&pick(&|_| true, k), true);
            let e: Vec<f64> = (0..D).map(|r| xhat[r] - f64::from(xb[r])).collect();
            total += e.iter().map(|v| v * v).sum::<f64>() / B as f64;
            let r: Vec<f64> = match r0 {
                Some(r0) => r0[b * D..(b + 1) * D].to_vec(),
                None => e.iter().map(|v| -v).collect(),
            };
            let ehat = decode(&pick(&|i| dead[i], k_aux), false);
            let aux: f64 = (0..D).map(|i| (ehat[i] - r[i]).powi(2)).sum();
            total += f64::from(alpha) * scale * aux / B as f64;
            resid.extend(r);
        }
        (total, resid)
    };
    for seed in 0..3 {
        let (cfg, p, x) = setup(arch.clone(), seed);
        let mut g = Params::zeros(D, S, false);
        let stats = loss_and_grads(
            &p,
            &cfg,
            &x,
            0.0,
            Some(&dead),
            &mut g,
            &mut Scratch::default(),
        );
        let (l0, r0) = reference(&p, &x, None);
        assert!(
            (l0 - stats.loss()).abs() < 1e-4 * (1.0 + l0),
            "{l0} vs {}",
            stats.loss()
        );
        assert!(
            stats.aux_loss > 0.0,
            "seed {seed}: no dead latent was selected"
        );
        let h = 1e-3;
        for ti in 0..4 {
            for j in 0..p.tensors()[ti].len() {
                let mut plus = p.clone();
                plus.tensors_mut()[ti][j] += h;
                let mut minus = p.clone();
                minus.tensors_mut()[ti][j] -= h;
                let lp = reference(&plus, &x, Some(&r0)).0;
                let lm = reference(&minus, &x, Some(&r0)).0;
                let an = f64::from(g.tensors()[ti][j]);
                let h = f64::from(h);
                let close = |fd: f64, tol: f64| (fd - an).abs() <= tol * (1.0 + an.abs());
                assert!(
                    close((lp - lm) / (2.0 * h), 1e-3)
                        || close((lp - l0) / h, 1e-2)
                        || close((l0 - lm) / h, 1e-2),
                    "seed {seed}: tensor {ti}[{j}] analytic {an} vs {}",
                    (lp - lm) / (2.0 * h)
                );
            }
        }
    }
}

#[test]
fn batchtopk_gradients_match_finite_differences() {
    let arch = ArchConfig::BatchTopK {
        k: 2,
        threshold_lr: 0.01,
        aux: AuxKConfig::default(),
    };
    check(arch, 0.0, None);
}

#[test]
fn jumprelu_gradients_match_finite_differences_and_threshold_uses_the_ste() {
    let (eps, lambda) = (0.3f32, 0.4f32);
    let arch = ArchConfig::JumpRelu {
        l0_coeff: lambda,
        bandwidth: eps,
        init_threshold: 0.1,
        l0_warmup_fraction: 0.0,
    };
    check(arch.clone(), lambda, None);
    // Threshold: −(θ/ε)·Σ_b ∂L/∂f_bi·K − (λ/B)(1/ε)·Σ_b K, K = [|z − θ| < ε/2].
    let (cfg, p, x) = setup(arch, 11);
    let mut g = Params::zeros(D, S, true);
    loss_and_grads(&p, &cfg, &x, lambda, None, &mut g, &mut Scratch::default());
    let mut want = [0.0f64; S];
    for b in 0..B {
        let xc: Vec<f32> = (0..D).map(|r| x[b * D + r] - p.b_dec[r]).collect();
        let z: Vec<f32> = (0..S)
            .map(|i| p.b_enc[i] + dot(&xc, &p.w_enc_t[i * D..(i + 1) * D]))
            .collect();
        let mut e = p.b_dec.clone();
        for i in 0..S {
            if z[i] > p.threshold[i] {
                axpy(&mut e, z[i], &p.w_dec[i * D..(i + 1) * D]);
            }
        }
        (0..D).for_each(|r| e[r] -= x[b * D + r]);
        for i in 0..S {
            let t = p.threshold[i];
            if (z[i] - t).abs() < eps / 2.0 {
                let df = 2.0 / B as f32 * dot(&e, &p.w_dec[i * D..(i + 1) * D]);
                want[i] += f64::from(-(t / eps) * df - lambda / B as f32 / eps);
            }
        }
    }
    assert!(
        want.iter().any(|w| *w != 0.0),
        "no latent near its threshold"
    );
    for i in 0..S {
        assert!(
            (f64::from(g.threshold[i]) - want[i]).abs() < 1e-4,
            "threshold[{i}]"
        );
    }
}
