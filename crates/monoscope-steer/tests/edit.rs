//! The edit formulas on host rows, against encode → edit → decode + error computed with the SAE
//! library alone.

mod common;

use std::sync::Arc;

use monoscope_sae::{Architecture, Sae};
use monoscope_steer::{FeatureEdit, Mode, SaeSteering};

const D_IN: usize = 16;
const D_SAE: usize = 40;
const ROWS: usize = 6;

fn saes() -> Vec<Sae> {
    vec![
        common::random_sae(D_IN, D_SAE, Architecture::Relu, 3),
        common::random_sae(D_IN, D_SAE, Architecture::TopK { k: 5 }, 4),
    ]
}

/// The paper's definition, computed independently: x' = decode(f with f_i = c) + (x − decode(f)).
fn reference(sae: &Sae, x: &[f32], edits: &[FeatureEdit]) -> Vec<f32> {
    let f = sae.encode(x).unwrap();
    let mut edited = f.clone();
    for row in edited.chunks_mut(D_SAE) {
        for e in edits {
            let i = e.feature as usize;
            row[i] = match e.mode {
                Mode::Clamp => e.value,
                Mode::Ablate => 0.0,
                Mode::Add => row[i] + e.value,
            };
        }
    }
    let (clean, steered) = (sae.decode(&f).unwrap(), sae.decode(&edited).unwrap());
    x.iter()
        .zip(clean.iter().zip(&steered))
        .map(|(x, (c, s))| s + (x - c))
        .collect()
}

fn steer_all(sae: &Sae, x: &[f32], edits: Vec<FeatureEdit>) -> Vec<f32> {
    let steering = SaeSteering::new(Arc::new(sae.clone()), edits).unwrap();
    let mut out = x.to_vec();
    steering.steer_rows(&mut out, |_| true).unwrap();
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn clamp_add_and_ablate_match_encode_edit_decode_plus_error() {
    for sae in saes() {
        let x = common::random_rows(ROWS, D_IN, 11);
        let codes = sae.encode(&x).unwrap();
        // One feature that fires somewhere and one that may not, edited together.
        let active = (0..D_SAE).find(|&i| codes[i] > 0.0).unwrap() as u32;
        let other = (active + 7) % D_SAE as u32;
        for mode in [Mode::Clamp, Mode::Add, Mode::Ablate] {
            let edits = vec![
                FeatureEdit {
                    feature: active,
                    mode,
                    value: 3.5,
                },
                FeatureEdit {
                    feature: other,
                    mode,
                    value: -1.25,
                },
            ];
            let got = steer_all(&sae, &x, edits.clone());
            let want = reference(&sae, &x, &edits);
            let diff = max_diff(&got, &want);
            assert!(
                diff < 1e-4,
                "{:?} {mode:?}: max diff {diff}",
                sae.architecture
            );
            // And the edit did something.
            assert!(max_diff(&got, &x) > 0.1, "{mode:?} changed nothing");
        }
    }
}

#[test]
fn clamping_a_feature_to_its_current_value_changes_nothing() {
    for sae in saes() {
        let x = common::random_rows(ROWS, D_IN, 12);
        for row in 0..ROWS {
            // The row encoded on its own, as the steering encodes exactly the rows it edits (a
            // batched product may round differently in the last bit).
            let f = sae.encode(&x[row * D_IN..(row + 1) * D_IN]).unwrap();
            for (feature, &value) in f.iter().enumerate() {
                let steering = SaeSteering::new(
                    Arc::new(sae.clone()),
                    vec![FeatureEdit {
                        feature: feature as u32,
                        mode: Mode::Clamp,
                        value,
                    }],
                )
                .unwrap();
                let mut out = x.clone();
                steering.steer_rows(&mut out, |r| r == row).unwrap();
                assert_eq!(
                    out, x,
                    "row {row}, feature {feature} clamped to its value {value}"
                );
            }
        }
        // The same clamp value applied to every row does change rows where it differs.
        let steering = SaeSteering::new(
            Arc::new(sae.clone()),
            vec![FeatureEdit {
                feature: 0,
                mode: Mode::Clamp,
                value: 5.0,
            }],
        )
        .unwrap();
        let mut out = x.clone();
        steering.steer_rows(&mut out, |_| true).unwrap();
        assert_ne!(out, x);
    }
}

#[test]
fn the_input_scale_folded_into_the_sae_gives_the_same_edit_in_model_units() {
    // An SAE trained on s·x: clamping in its normalised space and mapping back (÷ s) must equal
    // clamping with the folded SAE on raw x.
    let s = 0.37f32;
    let trained = common::random_sae(D_IN, D_SAE, Architecture::TopK { k: 5 }, 5);
    let mut folded = trained.clone();
    folded.fold_input_scale(s);
    let x = common::random_rows(ROWS, D_IN, 13);
    let scaled: Vec<f32> = x.iter().map(|v| v * s).collect();
    let edits = vec![FeatureEdit {
        feature: 2,
        mode: Mode::Clamp,
        value: 4.0,
    }];
    let in_trained_space = reference(&trained, &scaled, &edits);
    let want: Vec<f32> = in_trained_space.iter().map(|v| v / s).collect();
    let got = steer_all(&folded, &x, edits);
    let diff = max_diff(&got, &want);
    assert!(diff < 1e-3, "max diff {diff}");
}

#[test]
fn bad_edits_are_refused_with_the_value() {
    let sae = Arc::new(common::random_sae(D_IN, D_SAE, Architecture::Relu, 6));
    let edit = |feature, value| FeatureEdit {
        feature,
        mode: Mode::Clamp,
        value,
    };
    let msg = SaeSteering::new(sae.clone(), vec![edit(40, 1.0)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("40") && msg.contains("0..40"), "{msg}");
    let msg = SaeSteering::new(sae.clone(), vec![edit(1, f32::NAN)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("NaN") && msg.contains("finite"), "{msg}");
    let msg = SaeSteering::new(sae.clone(), vec![edit(1, 1.0), edit(1, 2.0)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("twice"), "{msg}");
    let steering = SaeSteering::new(sae, vec![edit(1, 1.0)]).unwrap();
    let msg = steering
        .steer_rows(&mut [0.0; 17], |_| true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("17") && msg.contains("d_in = 16"), "{msg}");
}
