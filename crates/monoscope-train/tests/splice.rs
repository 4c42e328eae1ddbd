//! The CE-loss splice on a tiny random-weight model: exact reconstruction scores 1 with zero
//! KL, a zero SAE scores 0, and a random SAE's figures match an independent computation
//! through the model crate's own log-probabilities and next-token distributions with the SAE
//! run live inside the forward pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use monoscope_core::ActivationBatch;
use monoscope_lm::{Device, HookContext, HookName, Interventions, Model, Tensor, TokenBatch};
use monoscope_sae::{Architecture, Sae, SpliceEvaluator};
use monoscope_store::{ModelIdentity, Store, StoreSpec, StoreWriter};
use monoscope_train::{ModelSplice, held_out_windows};
use rand::{Rng, SeedableRng};

const BOS: u32 = 1;

fn tiny_model(dir: &std::path::Path) -> Model {
    let path = dir.join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&path)
        .unwrap();
    monoscope_lm::load(&path, &Device::flex()).unwrap()
}

fn hook() -> HookName {
    HookName::resid_post(0)
}

/// Windows of random non-special tokens, each starting with BOS; lengths differ so that the
/// batches are padded.
fn windows(model: &Model) -> Vec<Vec<u32>> {
    let vocab = model.config().vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    [12, 9, 12, 5, 12, 7]
        .iter()
        .map(|&n| {
            std::iter::once(BOS)
                .chain((0..n).map(|_| rng.random_range(3..vocab)))
                .collect()
        })
        .collect()
}

fn sae(d: usize, s: usize, architecture: Architecture) -> Sae {
    Sae {
        d_in: d,
        d_sae: s,
        architecture,
        w_enc: vec![0.0; d * s],
        b_enc: vec![0.0; s],
        w_dec: vec![0.0; s * d],
        b_dec: vec![0.0; d],
        threshold: None,
        apply_b_dec_to_input: true,
        metadata: Default::default(),
        extra_cfg: Default::default(),
    }
}

/// `relu(x) − relu(−x) = x` through 2·d ReLU latents.
fn identity_sae(d: usize) -> Sae {
    let mut sae = sae(d, 2 * d, Architecture::Relu);
    for i in 0..d {
        sae.w_enc[i * 2 * d + i] = 1.0;
        sae.w_enc[i * 2 * d + d + i] = -1.0;
        sae.w_dec[i * d + i] = 1.0;
        sae.w_dec[(d + i) * d + i] = -1.0;
    }
    sae
}

fn random_sae(d: usize, s: usize) -> Sae {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut sae = sae(d, s, Architecture::TopK { k: 6 });
    for w in sae.w_enc.iter_mut().chain(sae.w_dec.iter_mut()) {
        *w = rng.random_range(-0.3..0.3);
    }
    for b in sae.b_dec.iter_mut() {
        *b = rng.random_range(-0.1..0.1);
    }
    sae
}

#[test]
fn exact_reconstruction_scores_one_with_zero_kl() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let windows = windows(&model);
    let mut splice = ModelSplice::new(&model, hook(), windows, true);
    assert_eq!(splice.predictions(), 11 + 8 + 11 + 4 + 11 + 6);
    let report = splice
        .evaluate_splice(&identity_sae(model.d_model()))
        .unwrap();
    assert_eq!(report.tokens, 51);
    assert!(
        report.ce_loss_zero_ablation > report.ce_loss_clean + 1e-3,
        "zero ablation must hurt: {report:?}"
    );
    assert!((report.ce_loss_score - 1.0).abs() < 1e-4, "{report:?}");
    assert!(report.kl_div_with_sae.abs() < 1e-6, "{report:?}");
}

#[test]
fn a_zero_sae_scores_zero() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let d = model.d_model();
    let mut splice = ModelSplice::new(&model, hook(), windows(&model), true);
    let report = splice
        .evaluate_splice(&sae(d, 2 * d, Architecture::Relu))
        .unwrap();
    assert_eq!(report.ce_loss_with_sae, report.ce_loss_zero_ablation);
    assert_eq!(report.ce_loss_score, 0.0);
    assert!(report.kl_div_with_sae > 1e-3, "{report:?}");
}

/// The SAE inside the forward pass, BOS column kept clean; or zero ablation without an SAE.
fn live(sae: Option<Arc<Sae>>) -> Interventions {
    let f = move |_: &HookName, x: Tensor<3>, _: &HookContext| {
        let [b, t, d] = x.dims();
        let device = x.device();
        let host = monoscope_lm::to_host(x, "hook").unwrap();
        let mut out = match &sae {
            Some(sae) => sae.reconstruct(&host).unwrap(),
            None => vec![0.0; host.len()],
        };
        for r in 0..b {
            let bos = r * t * d..(r * t + 1) * d;
            out[bos.clone()].copy_from_slice(&host[bos]);
        }
        Tensor::from_data(burn::tensor::TensorData::new(out, [b, t, d]), &device)
    };
    Interventions::new().with(hook(), f)
}

fn mean_nll(model: &Model, windows: &[Vec<u32>], interventions: &Interventions) -> f64 {
    let (mut sum, mut n) = (0.0, 0);
    for w in windows {
        let logp = model
            .log_probs(&TokenBatch::single(w).unwrap(), interventions)
            .unwrap();
        // Entry 0 is BOS's prediction of the first token: not scored.
        for &lp in &logp[1..] {
            sum -= f64::from(lp);
            n += 1;
        }
    }
    sum / f64::from(n)
}

#[test]
fn a_random_sae_matches_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sae = random_sae(model.d_model(), 48);
    let windows = windows(&model);
    let report = ModelSplice::new(&model, hook(), windows.clone(), true)
        .evaluate_splice(&sae)
        .unwrap();

    let spliced = live(Some(Arc::new(sae)));
    let clean = mean_nll(&model, &windows, &Interventions::new());
    let with_sae = mean_nll(&model, &windows, &spliced);
    let zero = mean_nll(&model, &windows, &live(None));
    let (mut kl, mut n) = (0.0, 0);
    for w in &windows {
        for end in 2..w.len() {
            let p = model
                .next_token_distribution(&w[..end], &Interventions::new())
                .unwrap();
            let q = model.next_token_distribution(&w[..end], &spliced).unwrap();
            kl += p
                .iter()
                .zip(&q)
                .filter(|(p, _)| **p > 0.0)
                .map(|(&p, &q)| f64::from(p) * (f64::from(p).ln() - f64::from(q).ln()))
                .sum::<f64>();
            n += 1;
        }
    }
    let kl = kl / f64::from(n);
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{what}: evaluator {a}, independent {b}"
        );
    };
    close(report.ce_loss_clean, clean, "clean CE");
    close(report.ce_loss_with_sae, with_sae, "spliced CE");
    close(report.ce_loss_zero_ablation, zero, "zero-ablation CE");
    close(report.kl_div_with_sae, kl, "KL");
    close(
        report.ce_loss_score,
        (zero - with_sae) / (zero - clean),
        "ce_loss_score",
    );
    assert!(
        report.kl_div_with_sae > 1e-4,
        "a random SAE changes the model"
    );
}

#[test]
fn windows_are_rebuilt_from_runs_of_one_document_at_consecutive_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let identity = ModelIdentity {
        name: "m".into(),
        sha256: "0".into(),
    };
    let mut spec = StoreSpec::new(identity, vec!["h".into()], 2);
    spec.context_length = 4;
    spec.rows_per_shard = 4;
    let mut writer = StoreWriter::create(&store_dir, spec).unwrap();
    // doc 0: positions 1..=5; doc 1: 1..=3 then a gap (an unstored token) before 7; doc 2: one
    // token, which makes no prediction.
    let rows: [(u32, u32, u32); 11] = [
        (10, 0, 1),
        (11, 0, 2),
        (12, 0, 3),
        (13, 0, 4),
        (14, 0, 5),
        (20, 1, 1),
        (21, 1, 2),
        (22, 1, 3),
        (27, 1, 7),
        (28, 1, 8),
        (30, 2, 1),
    ];
    let batch = ActivationBatch {
        d_model: 2,
        token_ids: rows.iter().map(|r| r.0).collect(),
        doc_ids: rows.iter().map(|r| r.1).collect(),
        positions: rows.iter().map(|r| r.2).collect(),
        hooks: BTreeMap::from([("h".to_string(), vec![0.5; 2 * rows.len()])]),
    };
    writer.write_batch(&batch).unwrap();
    writer.finish().unwrap();
    let store = Store::open(&store_dir).unwrap();

    let all = held_out_windows(&store, 0..11, Some(BOS), 4, 1000).unwrap();
    let expected: Vec<Vec<u32>> = vec![
        vec![BOS, 10, 11, 12],
        vec![BOS, 13, 14],
        vec![BOS, 20, 21, 22],
        vec![BOS, 27, 28],
    ];
    assert_eq!(all, expected);
    let capped = held_out_windows(&store, 0..11, Some(BOS), 4, 3).unwrap();
    assert_eq!(capped, vec![vec![BOS, 10, 11, 12], vec![BOS, 13, 14]]);
    let from_row_2 = held_out_windows(&store, 2..6, None, 4, 1000).unwrap();
    assert_eq!(from_row_2, vec![vec![12, 13, 14]]);
}

#[test]
fn massive_positions_left_clean_score_as_clean_and_none_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let d = model.d_model();
    let zero = sae(d, 2 * d, Architecture::Relu);
    // Threshold 0: every spliced position is massive, so sparing them is the clean model.
    let report = ModelSplice::new(&model, hook(), windows(&model), true)
        .with_massive_norm(0.0)
        .evaluate_splice(&zero)
        .unwrap();
    let spared = report.massive.clone().expect("a threshold was given");
    assert!(spared.positions >= report.tokens, "{report:?}");
    assert!(
        (spared.ce_loss_with_sae - report.ce_loss_clean).abs() < 1e-9,
        "{report:?}"
    );
    assert!((spared.ce_loss_score - 1.0).abs() < 1e-9);
    assert_eq!(report.ce_loss_score, 0.0);
    // A threshold nothing reaches: the same as the plain splice.
    let report = ModelSplice::new(&model, hook(), windows(&model), true)
        .with_massive_norm(f32::MAX)
        .evaluate_splice(&zero)
        .unwrap();
    let spared = report.massive.clone().unwrap();
    assert_eq!(spared.positions, 0);
    assert!((spared.ce_loss_score - report.ce_loss_score).abs() < 1e-12);
}
