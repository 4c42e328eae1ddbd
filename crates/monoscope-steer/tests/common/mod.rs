//! Shared fixtures: a tiny random-weight GGUF model and small random SAEs.

#![allow(dead_code)]

use std::path::Path;

use monoscope_artifacts::train::{DensityHistogram, EvalReport, TrainOutputs};
use monoscope_formats::testing::{TinyLlama, XorShift};
use monoscope_lm::{Device, Model};
use monoscope_sae::{Architecture, Sae, SaeMetadata};

pub const HOOK: &str = "blocks.0.hook_resid_post";

/// The default tiny Llama (d_model 64, 2 blocks), written as GGUF and loaded back.
pub fn tiny_model() -> Model {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    TinyLlama::default().write(&path).unwrap();
    monoscope_lm::load(&path, &Device::flex()).unwrap()
}

/// A random SAE whose decoder rows are large enough to move a tiny model's residual stream.
pub fn random_sae(d_in: usize, d_sae: usize, architecture: Architecture, seed: u64) -> Sae {
    let mut rng = XorShift::new(seed);
    let sae = Sae {
        d_in,
        d_sae,
        architecture,
        w_enc: rng.vec(d_in * d_sae, 1.0 / (d_in as f32).sqrt()),
        b_enc: rng.vec(d_sae, 0.1),
        w_dec: rng.vec(d_sae * d_in, 0.5),
        b_dec: rng.vec(d_in, 0.1),
        threshold: None,
        apply_b_dec_to_input: true,
        metadata: SaeMetadata {
            hook_name: Some(HOOK.to_string()),
            ..SaeMetadata::default()
        },
        extra_cfg: Default::default(),
    };
    sae.validate().unwrap();
    sae
}

/// Saves `sae` as `<run>/train/sae` with an `eval.json` beside it giving every feature the
/// maximum activation `max_activation`; returns the SAE directory.
pub fn write_trained_sae(run: &Path, sae: &Sae, max_activation: f32) -> std::path::PathBuf {
    let dir = run.join("train").join("sae");
    monoscope_sae::save_saelens(sae, &dir).unwrap();
    let eval = EvalReport {
        tokens: 100,
        d_in: sae.d_in,
        d_sae: sae.d_sae,
        l0: 1.0,
        mse: 0.0,
        fvu: 0.0,
        explained_variance: 1.0,
        dead_fraction: 0.0,
        dense_fraction: 0.0,
        dense_threshold: 0.1,
        density_histogram: DensityHistogram {
            edges: vec![],
            counts: vec![],
            never_fired: 0,
        },
        feature_frequency: vec![0.01; sae.d_sae],
        feature_max_activation: vec![max_activation; sae.d_sae],
        massive: None,
        splice: None,
        splice_skipped: None,
    };
    TrainOutputs::new(run.join("train"))
        .write_eval(&eval)
        .unwrap();
    dir
}

/// Random rows `[n, d]`.
pub fn random_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    XorShift::new(seed).vec(n * d, 2.0)
}
