//! Attribution by a real backward pass: the gradient at the SAE's hook matches central finite
//! differences through the whole model, the attributions are that gradient along the decoder
//! directions, and the ablations are real forward passes.

mod common;

use std::sync::Arc;

use monoscope_lm::{Device, Interventions, MatmulKind, ModelOptions};
use monoscope_sae::Architecture;
use monoscope_steer::attribute::{
    AttributionInput, AttributionOptions, ablation_at, attribute, hook_gradient, logprob_with,
};
use monoscope_steer::{FeatureTable, Steerer};

fn input(model: &monoscope_lm::Model) -> AttributionInput<'static> {
    let tokenizer = model.tokenizer();
    let mut prompt_ids = vec![tokenizer.bos_id().unwrap()];
    prompt_ids.extend(tokenizer.encode("the river runs north to", false).unwrap());
    AttributionInput {
        prompt: "the river runs north to",
        target: " the sea",
        prompt_ids,
        target_ids: tokenizer.encode(" the sea", false).unwrap(),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

#[test]
fn the_hook_gradient_matches_finite_differences() {
    let model = common::tiny_model();
    let sae = Arc::new(common::random_sae(
        model.d_model(),
        32,
        Architecture::TopK { k: 4 },
        7,
    ));
    let hook = model.hook(common::HOOK).unwrap();
    let input = input(&model);
    let seq = input.prompt_ids.len() + input.target_ids.len();
    assert!(input.target_ids.len() >= 2, "the target should span tokens");
    let d = model.d_model();

    let grad = hook_gradient(&model, hook, &input).unwrap();
    assert_eq!(grad.gradient.len(), seq * d);
    let plain = logprob_with(&model, &input, Interventions::new()).unwrap();
    assert!(
        (grad.target_logprob - plain).abs() < 1e-4,
        "{grad:?} {plain}"
    );

    // Nothing after the last target token's input can change its probability: the last
    // position's gradient is exactly zero, every earlier one is not.
    assert!(grad.gradient[(seq - 1) * d..].iter().all(|&g| g == 0.0));
    for position in 0..seq - 1 {
        let g = &grad.gradient[position * d..(position + 1) * d];
        assert!(g.iter().any(|&v| v != 0.0), "position {position}");
    }

    // Moving the activation along a decoder direction by ±eps at one position.
    let eps = 1e-2f32;
    let mut checked = 0;
    for (feature, position) in [(0u32, 1usize), (5, 2), (17, seq - 2), (31, 3)] {
        let at = |delta: f32| {
            // `ablation_at` subtracts `activation · W_dec,f`: a negative activation adds.
            let shift = ablation_at(sae.clone(), feature, position, -delta);
            logprob_with(&model, &input, Interventions::new().with(hook, shift)).unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
        let f = feature as usize;
        let analytic = dot(
            &sae.w_dec[f * d..(f + 1) * d],
            &grad.gradient[position * d..(position + 1) * d],
        );
        assert!(
            (numeric - analytic).abs() <= 0.02 * analytic.abs().max(numeric.abs()) + 2e-3,
            "feature {feature} at {position}: finite differences {numeric}, backward {analytic}"
        );
        checked += usize::from(analytic.abs() > 1e-3);
    }
    assert!(checked >= 3, "the directions checked should matter");
}

#[test]
fn attributions_are_the_gradient_along_decoder_directions_and_ablations_are_real() {
    let model = common::tiny_model();
    let sae = Arc::new(common::random_sae(
        model.d_model(),
        48,
        Architecture::TopK { k: 6 },
        4,
    ));
    let hook = model.hook(common::HOOK).unwrap();
    let input = input(&model);
    let d = model.d_model();
    let options = AttributionOptions {
        top: 12,
        ablate: 5,
        first_position: 1,
    };
    let result = attribute(
        &model,
        sae.clone(),
        hook,
        &FeatureTable::default(),
        &input,
        options,
    )
    .unwrap();

    let grad = hook_gradient(&model, hook, &input).unwrap();
    let codes = sae.encode_sparse(&grad.activation).unwrap();
    assert_eq!(result.entries.len(), 12);
    // The attention sink at position 0 is never attributed.
    assert!(result.entries.iter().all(|e| e.position >= 1));
    assert_eq!(result.ablated, 5);
    assert_eq!(result.target_start, input.prompt_ids.len());
    assert_eq!(
        result.tokens.len(),
        input.prompt_ids.len() + input.target_ids.len()
    );
    assert!(
        result
            .entries
            .windows(2)
            .all(|w| w[0].attribution.abs() >= w[1].attribution.abs())
    );
    let mut agreements = 0;
    for (i, entry) in result.entries.iter().enumerate() {
        let (features, values) = codes.row(entry.position);
        let slot = features.iter().position(|&f| f == entry.feature).unwrap();
        assert_eq!(values[slot], entry.activation);
        let f = entry.feature as usize;
        let expected = f64::from(entry.activation)
            * dot(
                &sae.w_dec[f * d..(f + 1) * d],
                &grad.gradient[entry.position * d..(entry.position + 1) * d],
            );
        assert!((entry.attribution - expected).abs() < 1e-6 * expected.abs().max(1.0));
        if i < 5 {
            let ablation =
                ablation_at(sae.clone(), entry.feature, entry.position, entry.activation);
            let effect = logprob_with(&model, &input, Interventions::new().with(hook, ablation))
                .unwrap()
                - result.target_logprob;
            let recorded = entry.ablation_effect.unwrap();
            assert!((recorded - effect).abs() < 1e-9, "{recorded} {effect}");
            agreements += usize::from(effect * entry.attribution < 0.0);
        } else {
            assert_eq!(entry.ablation_effect, None);
        }
    }
    assert_eq!(result.sign_agreements, agreements);
    assert_eq!(
        result.error_attribution.len(),
        input.prompt_ids.len() + input.target_ids.len()
    );
}

#[test]
fn the_steerer_attributes_and_the_int8_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&path)
        .unwrap();
    let int8 = monoscope_lm::load_with(
        &path,
        &Device::flex(),
        &ModelOptions::with_matmul(MatmulKind::Int8),
    )
    .unwrap();
    let sae = common::random_sae(int8.d_model(), 16, Architecture::TopK { k: 4 }, 1);
    let steerer = Steerer::new(&int8, sae.clone(), None, FeatureTable::default()).unwrap();
    let err = steerer
        .attribute("a river", " sea", false, AttributionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("int8") && err.contains("f32"), "{err}");

    let model = common::tiny_model();
    let steerer = Steerer::new(&model, sae, None, FeatureTable::default()).unwrap();
    let result = steerer
        .attribute(
            "a river",
            " sea",
            false,
            AttributionOptions {
                top: 3,
                ablate: 3,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(result.entries.len(), 3);
    assert!(result.entries.iter().all(|e| e.ablation_effect.is_some()));
    let err = steerer
        .attribute("a river", "", false, AttributionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("target"), "{err}");
}
