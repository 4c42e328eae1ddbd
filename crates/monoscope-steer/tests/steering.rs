//! Steering through the model: no-op edits are exact no-ops, edits reach generated positions,
//! and the effect measurements agree with the same quantities computed by hand.

mod common;

use std::sync::Arc;

use monoscope_lm::{
    ForwardOptions, GenerateOptions, HookContext, HookName, Interventions, Model, Tensor,
    TokenBatch,
};
use monoscope_sae::Architecture;
use monoscope_steer::measure::{log_softmax, log_sum_exp};
use monoscope_steer::{FeatureEdit, FeatureTable, Mode, SaeSteering, Steerer};

const PROMPT: &[u32] = &[1, 17, 42, 5, 63, 8, 120, 7];

fn steerer(model: &Model) -> Steerer<'_> {
    let sae = common::random_sae(model.d_model(), 48, Architecture::TopK { k: 6 }, 9);
    Steerer::new(model, sae, None, FeatureTable::default()).unwrap()
}

fn all_logits(model: &Model, ids: &[u32], iv: &Interventions) -> Vec<f32> {
    model
        .forward(
            &TokenBatch::single(ids).unwrap(),
            &ForwardOptions::logits(iv.clone()),
        )
        .unwrap()
        .logits_host()
        .unwrap()
}

fn edit(feature: u32, mode: Mode, value: f32) -> FeatureEdit {
    FeatureEdit {
        feature,
        mode,
        value,
    }
}

#[test]
fn zero_interventions_give_exactly_the_plain_forward() {
    let model = common::tiny_model();
    let s = steerer(&model);
    let plain = all_logits(&model, PROMPT, &Interventions::new());
    let codes = s.encode_ids(PROMPT).unwrap();
    let never_fires = (0..48u32)
        .find(|f| (0..codes.n_rows()).all(|r| !codes.row(r).0.contains(f)))
        .expect("with k = 6 of 48 some feature never fires on 8 tokens");
    for edits in [
        vec![],
        vec![edit(3, Mode::Add, 0.0)],
        vec![edit(never_fires, Mode::Ablate, 0.0)],
        vec![edit(never_fires, Mode::Clamp, 0.0), edit(5, Mode::Add, 0.0)],
    ] {
        let iv = s.interventions(edits.clone()).unwrap();
        assert_eq!(all_logits(&model, PROMPT, &iv), plain, "{edits:?}");
    }
    // A real edit does change the logits (so the equality above is not vacuous).
    let iv = s.interventions(vec![edit(3, Mode::Add, 4.0)]).unwrap();
    assert_ne!(all_logits(&model, PROMPT, &iv), plain);
}

#[test]
fn edits_reach_every_generated_position() {
    let model = common::tiny_model();
    let s = steerer(&model);
    let steering = s.interventions(vec![edit(3, Mode::Clamp, 6.0)]).unwrap();
    let options = GenerateOptions {
        keep_logits: true,
        stop_tokens: Some(vec![]),
        ..GenerateOptions::greedy(6)
    };
    let steered = model
        .generate(
            PROMPT,
            &options.clone().with_interventions(steering.clone()),
        )
        .unwrap();

    // The same edit applied to the prompt only (what a hook that skips cached steps would do).
    let sae = Arc::new(common::random_sae(
        model.d_model(),
        48,
        Architecture::TopK { k: 6 },
        9,
    ));
    let inner = SaeSteering::new(sae, vec![edit(3, Mode::Clamp, 6.0)]).unwrap();
    let prompt_only = Interventions::new().with(
        model.hook(common::HOOK).unwrap(),
        move |hook: &HookName, x: Tensor<3>, ctx: &HookContext| {
            use monoscope_lm::Intervention;
            if ctx.offset == 0 {
                inner.apply(hook, x, ctx)
            } else {
                x
            }
        },
    );
    let prompt_only_logits = model
        .generate(PROMPT, &options.clone().with_interventions(prompt_only))
        .unwrap()
        .logits;

    let mut seq = PROMPT.to_vec();
    let vocab = model.config().vocab_size;
    let mut differs_from_prompt_only = false;
    for (step, &token) in steered.tokens.iter().enumerate() {
        // Every position of the sequence so far steered, recomputed without a cache.
        let full = all_logits(&model, &seq, &steering);
        let last = &full[full.len() - vocab..];
        let diff = steered.logits[step]
            .iter()
            .zip(last)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff < 1e-3,
            "step {step}: cached steered generation differs by {diff}"
        );
        if step > 0 {
            let gap = prompt_only_logits[step]
                .iter()
                .zip(&steered.logits[step])
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            differs_from_prompt_only |= gap > 1e-2;
        }
        seq.push(token);
    }
    assert!(
        differs_from_prompt_only,
        "steering generated positions made no difference"
    );
}

#[test]
fn target_logprobs_match_a_hand_computed_teacher_forced_sum() {
    let model = common::tiny_model();
    let s = steerer(&model);
    let tokenizer = model.tokenizer();
    let context = s.text_ids("hello the").unwrap();
    for edits in [vec![], vec![edit(7, Mode::Add, 3.0)]] {
        let iv = s.interventions(edits.clone()).unwrap();
        let targets = vec!["hello".to_string(), " in".to_string()];
        let got = s.target_logprobs(&context, &targets, &iv).unwrap();
        // By hand: one full forward per spelling, log-softmax, sum over the target's tokens;
        // "hello" also counts as " hello".
        let by_hand = |variant: &str| {
            let ids = tokenizer.encode(variant, false).unwrap();
            let seq: Vec<u32> = context.iter().copied().chain(ids.iter().copied()).collect();
            let logits = all_logits(&model, &seq, &iv);
            let vocab = model.config().vocab_size;
            (0..ids.len())
                .map(|k| {
                    let row = context.len() - 1 + k;
                    log_softmax(&logits[row * vocab..(row + 1) * vocab])[ids[k] as usize]
                })
                .sum::<f64>()
        };
        let want = [
            log_sum_exp(&[by_hand("hello"), by_hand(" hello")]),
            by_hand(" in"),
        ];
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{edits:?}: {g} vs {w}");
        }
    }
}

#[test]
fn neutral_kl_matches_a_hand_computed_mean() {
    let model = common::tiny_model();
    let s = steerer(&model);
    let ids = s.text_ids("hello the hello in the").unwrap();
    let plain = s.logits(&ids, &Interventions::new()).unwrap();
    assert_eq!(
        s.kl_against(&ids, &plain, &Interventions::new()).unwrap(),
        0.0
    );
    let iv = s.interventions(vec![edit(2, Mode::Clamp, 5.0)]).unwrap();
    let steered = all_logits(&model, &ids, &iv);
    let vocab = model.config().vocab_size;
    let mut total = 0.0;
    for (p, q) in plain.chunks(vocab).zip(steered.chunks(vocab)) {
        let (lp, lq) = (log_softmax(p), log_softmax(q));
        total += lp
            .iter()
            .zip(&lq)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
    }
    let want = total / ids.len() as f64;
    let got = s.kl_against(&ids, &plain, &iv).unwrap();
    assert!(
        want > 1e-4,
        "the edit should move the distribution (KL {want})"
    );
    assert!((got - want).abs() < 1e-6 * want.max(1.0), "{got} vs {want}");
}

#[test]
fn the_first_position_is_left_alone_unless_asked() {
    let model = common::tiny_model();
    let s = steerer(&model);
    let iv = s.interventions(vec![edit(3, Mode::Add, 5.0)]).unwrap();
    let vocab = model.config().vocab_size;
    let plain = all_logits(&model, PROMPT, &Interventions::new());
    let steered = all_logits(&model, PROMPT, &iv);
    assert_eq!(
        steered[..vocab],
        plain[..vocab],
        "position 0 must be untouched"
    );
    assert_ne!(steered[vocab..2 * vocab], plain[vocab..2 * vocab]);
    let s = steerer(&model).steer_first_position(true);
    let iv = s.interventions(vec![edit(3, Mode::Add, 5.0)]).unwrap();
    assert_ne!(all_logits(&model, PROMPT, &iv)[..vocab], plain[..vocab]);
}
