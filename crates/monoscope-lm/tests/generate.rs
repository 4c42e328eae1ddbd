//! Generation: the KV cache against full re-runs, interventions at generated positions, seeded
//! sampling, the scoring helpers, and bad input.

mod common;

use common::Spec;
use monoscope_lm::{
    ForwardOptions, GenerateOptions, HookContext, HookName, Interventions, LmError, Logits,
    Sampling, Tensor, TokenBatch,
};

const PROMPT: &[u32] = &[1, 17, 42, 5, 63, 8];

fn last_logits_full(model: &monoscope_lm::Model, tokens: &[u32], iv: &Interventions) -> Vec<f32> {
    let out = model
        .forward(
            &TokenBatch::single(tokens).unwrap(),
            &ForwardOptions {
                interventions: iv.clone(),
                logits: Logits::Last,
                ..ForwardOptions::default()
            },
        )
        .unwrap();
    out.logits_host().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{what}: max diff {diff} (scale {scale})"
    );
}

#[test]
fn kv_cached_generation_equals_full_reruns() {
    for spec in [Spec::llama(), Spec::gpt2()] {
        let model = common::model(&spec);
        let options = GenerateOptions {
            keep_logits: true,
            stop_tokens: Some(vec![]),
            ..GenerateOptions::greedy(12)
        };
        let generated = model.generate(PROMPT, &options).unwrap();
        assert_eq!(generated.tokens.len(), 12);
        let mut seq = PROMPT.to_vec();
        for (step, &token) in generated.tokens.iter().enumerate() {
            let full = last_logits_full(&model, &seq, &Interventions::new());
            assert_close(&generated.logits[step], &full, &format!("step {step}"));
            let argmax = full
                .iter()
                .enumerate()
                .fold(0, |best, (i, &x)| if x > full[best] { i } else { best });
            assert_eq!(token as usize, argmax, "step {step}");
            seq.push(token);
        }
    }
}

/// Adds a large multiple of `target`'s embedding to the last residual stream, but only at
/// positions at or after `from`.
fn steer_towards(target: u32, from: usize, model: &monoscope_lm::Model) -> Interventions {
    let row = model
        .embedding_matrix()
        .narrow(0, target as usize, 1)
        .reshape([1, 1, common::D_MODEL]);
    let last = HookName::resid_post(common::N_LAYERS - 1);
    Interventions::new().with(
        last,
        move |_: &HookName, x: Tensor<3>, ctx: &HookContext| {
            let [b, t, d] = x.dims();
            // Column c is sequence position ctx.offset + c; steer only from `from` on.
            let start = from.saturating_sub(ctx.offset).min(t);
            if start == t {
                return x;
            }
            let add = row.clone().expand([b, t - start, d]) * 40.0;
            if start == 0 {
                return x + add;
            }
            let head = x.clone().narrow(1, 0, start);
            let tail = x.narrow(1, start, t - start) + add;
            Tensor::cat(vec![head, tail], 1)
        },
    )
}

#[test]
fn steering_reaches_generated_positions() {
    let model = common::model(&Spec {
        tied: true,
        ..Spec::llama()
    });
    let options = GenerateOptions {
        stop_tokens: Some(vec![]),
        ..GenerateOptions::greedy(8)
    };
    let clean = model.generate(PROMPT, &options).unwrap();
    let target = (0..common::VOCAB as u32)
        .find(|t| !clean.tokens.contains(t))
        .unwrap();
    // Only generated positions are steered: the first new token (predicted from the prompt)
    // is unchanged, every later one is pulled to the target.
    let steered = model
        .generate(
            PROMPT,
            &options
                .clone()
                .with_interventions(steer_towards(target, PROMPT.len(), &model)),
        )
        .unwrap();
    assert_eq!(steered.tokens[0], clean.tokens[0]);
    assert!(
        steered.tokens[1..].iter().all(|&t| t == target),
        "steered {:?}, clean {:?}, target {target}",
        steered.tokens,
        clean.tokens
    );
    // Steering every position changes the first token too.
    let everywhere = model
        .generate(
            PROMPT,
            &options.with_interventions(steer_towards(target, 0, &model)),
        )
        .unwrap();
    assert_eq!(everywhere.tokens[0], target);
}

#[test]
fn cached_steered_generation_equals_full_reruns() {
    let model = common::model(&Spec {
        tied: true,
        seed: 3,
        ..Spec::llama()
    });
    let iv = steer_towards(7, 3, &model);
    let options = GenerateOptions {
        keep_logits: true,
        stop_tokens: Some(vec![]),
        ..GenerateOptions::greedy(5)
    }
    .with_interventions(iv.clone());
    let generated = model.generate(PROMPT, &options).unwrap();
    let mut seq = PROMPT.to_vec();
    for (step, &token) in generated.tokens.iter().enumerate() {
        let full = last_logits_full(&model, &seq, &iv);
        assert_close(&generated.logits[step], &full, &format!("step {step}"));
        seq.push(token);
    }
}

#[test]
fn stop_tokens_end_generation() {
    let model = common::model(&Spec::llama());
    let free = model
        .generate(
            PROMPT,
            &GenerateOptions {
                stop_tokens: Some(vec![]),
                ..GenerateOptions::greedy(6)
            },
        )
        .unwrap();
    let stop = free.tokens[2];
    let first = free.tokens.iter().position(|&t| t == stop).unwrap();
    let stopped = model
        .generate(
            PROMPT,
            &GenerateOptions {
                stop_tokens: Some(vec![stop]),
                ..GenerateOptions::greedy(6)
            },
        )
        .unwrap();
    assert_eq!(stopped.tokens, free.tokens[..=first]);
    assert_eq!(stopped.stopped_on, Some(stop));
}

#[test]
fn sampling_is_deterministic_per_seed() {
    let model = common::model(&Spec::llama());
    let sample = |seed| {
        model
            .generate(
                PROMPT,
                &GenerateOptions {
                    sampling: Sampling::Sample {
                        temperature: 1.5,
                        top_k: Some(40),
                        top_p: Some(0.95),
                        seed,
                    },
                    stop_tokens: Some(vec![]),
                    ..GenerateOptions::greedy(16)
                },
            )
            .unwrap()
            .tokens
    };
    assert_eq!(sample(3), sample(3));
    assert_ne!(sample(3), sample(4));
}

#[test]
fn log_probs_agree_with_the_next_token_distribution() {
    let model = common::model(&Spec::gpt2());
    let none = Interventions::new();
    let lp = model
        .log_probs(&TokenBatch::single(PROMPT).unwrap(), &none)
        .unwrap();
    assert_eq!(lp.len(), PROMPT.len() - 1);
    for i in 1..PROMPT.len() {
        let dist = model.next_token_distribution(&PROMPT[..i], &none).unwrap();
        let total: f32 = dist.iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
        let want = dist[PROMPT[i] as usize].ln();
        assert!(
            (lp[i - 1] - want).abs() < 1e-4,
            "position {i}: {} vs {want}",
            lp[i - 1]
        );
    }
    // Padding gives NaN where the context or the target is padding, values elsewhere.
    let padded = TokenBatch::padded(
        &[PROMPT.to_vec(), PROMPT[..3].to_vec()],
        monoscope_lm::PadSide::Right,
        0,
    )
    .unwrap();
    let lp2 = model.log_probs(&padded, &none).unwrap();
    let width = PROMPT.len() - 1;
    assert!(
        (lp2[..width]
            .iter()
            .zip(&lp)
            .all(|(a, b)| (a - b).abs() < 1e-4))
    );
    assert!(lp2[width + 1].is_finite() && lp2[width + 2].is_nan());
}

#[test]
fn bad_input_gives_clear_errors() {
    let model = common::model(&Spec::llama());
    let err = model.hook("blocks.99.hook_resid_post").unwrap_err();
    assert!(matches!(
        err,
        LmError::HookLayerOutOfRange { layer: 99, .. }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("blocks.99.hook_resid_post") && msg.contains("0..=1"),
        "{msg}"
    );

    for bad in [
        "blocks.0.hook_resid",
        "blocks.x.hook_resid_pre",
        "ln_final",
        "resid_post",
    ] {
        let msg = model.hook(bad).unwrap_err().to_string();
        assert!(msg.contains(bad), "{msg}");
    }
    assert_eq!(
        "blocks.3.hook_mlp_out".parse::<HookName>().unwrap(),
        HookName::mlp_out(3)
    );

    // A hook built in code is validated when used.
    let far = ForwardOptions::capture(vec![HookName::attn_out(5)]);
    let batch = TokenBatch::single(PROMPT).unwrap();
    assert!(matches!(
        model.forward(&batch, &far),
        Err(LmError::HookLayerOutOfRange { layer: 5, .. })
    ));

    assert!(matches!(
        TokenBatch::single(&[]),
        Err(LmError::EmptyInput(_))
    ));
    assert!(matches!(
        model.generate(&[], &GenerateOptions::greedy(3)),
        Err(LmError::EmptyInput(_))
    ));
    assert!(matches!(
        TokenBatch::from_rows(&[vec![1, 2], vec![3]]),
        Err(LmError::Batch(_))
    ));
    let out_of_vocab = TokenBatch::single(&[1, 64]).unwrap();
    let msg = model
        .forward(&out_of_vocab, &ForwardOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("64") && msg.contains("vocabulary"), "{msg}");
    let hot = GenerateOptions {
        sampling: Sampling::Sample {
            temperature: -1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        },
        ..GenerateOptions::greedy(3)
    };
    assert!(matches!(
        model.generate(PROMPT, &hot),
        Err(LmError::Sampling {
            name: "temperature",
            ..
        })
    ));
}

#[test]
fn cached_forward_continues_left_padded_batches() {
    let model = common::model(&Spec::llama());
    let rows = vec![PROMPT.to_vec(), PROMPT[3..].to_vec()];
    let batch = TokenBatch::padded(&rows, monoscope_lm::PadSide::Left, 0).unwrap();
    let mut cache = monoscope_lm::KvCache::new(common::N_LAYERS);
    let options = ForwardOptions {
        logits: Logits::Last,
        ..ForwardOptions::default()
    };
    model.forward_cached(&batch, &options, &mut cache).unwrap();
    assert_eq!(cache.len(), PROMPT.len());
    let next = TokenBatch::from_rows(&[vec![9], vec![9]]).unwrap();
    let out = model
        .forward_cached(&next, &options, &mut cache)
        .unwrap()
        .logits_host()
        .unwrap();
    for (r, row) in rows.iter().enumerate() {
        let mut seq = row.clone();
        seq.push(9);
        let alone = last_logits_full(&model, &seq, &Interventions::new());
        let got = &out[r * common::VOCAB..(r + 1) * common::VOCAB];
        assert_close(got, &alone, &format!("row {r}"));
    }
}
