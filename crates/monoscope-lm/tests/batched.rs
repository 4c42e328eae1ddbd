//! Many prompts at once: the shared prefix run once and the batch of remainders must compute
//! what each prompt computes alone.

mod common;

use common::Spec;
use monoscope_lm::{ForwardOptions, GenerateOptions, Logits, Sampling, TokenBatch};

fn prompts() -> Vec<Vec<u32>> {
    // A shared prefix of four tokens, then remainders of different lengths; the last prompt
    // is a prefix of none of the others and the third is the shared prefix plus one token.
    vec![
        vec![1, 17, 42, 5, 63, 8, 9],
        vec![1, 17, 42, 5, 11],
        vec![1, 17, 42, 5, 30, 31, 32, 33, 34],
        vec![1, 17, 42, 5, 63],
    ]
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn next_token_logits_equal_each_row_alone() {
    for spec in [Spec::llama(), Spec::gpt2()] {
        let model = common::model(&spec);
        let rows = prompts();
        let batched = model
            .next_token_logits(&rows, 0, &ForwardOptions::default())
            .unwrap();
        assert_eq!(batched.len(), rows.len());
        for (row, got) in rows.iter().zip(&batched) {
            let alone = model
                .forward(
                    &TokenBatch::single(row).unwrap(),
                    &ForwardOptions {
                        logits: Logits::Last,
                        ..ForwardOptions::default()
                    },
                )
                .unwrap()
                .logits_host()
                .unwrap();
            let diff = max_rel_diff(got, &alone);
            assert!(diff < 1e-4, "row {row:?}: relative diff {diff}");
        }
    }
}

#[test]
fn batch_generation_equals_each_prompt_alone() {
    for spec in [Spec::llama(), Spec::gpt2()] {
        let model = common::model(&spec);
        for sampling in [
            Sampling::Greedy,
            Sampling::Sample {
                temperature: 0.9,
                top_k: Some(20),
                top_p: Some(0.95),
                seed: 7,
            },
        ] {
            // A stop token that some rows hit and others do not: rows that stop early must
            // not disturb the rest.
            let options = GenerateOptions {
                sampling,
                stop_tokens: Some(vec![3, 4, 5]),
                keep_logits: true,
                ..GenerateOptions::greedy(10)
            };
            let rows = prompts();
            let batched = model.generate_batch(&rows, &options).unwrap();
            for (row, got) in rows.iter().zip(&batched) {
                let alone = model.generate(row, &options).unwrap();
                assert_eq!(got.tokens, alone.tokens, "prompt {row:?}");
                assert_eq!(got.stopped_on, alone.stopped_on, "prompt {row:?}");
                for (step, (a, b)) in got.logits.iter().zip(&alone.logits).enumerate() {
                    let diff = max_rel_diff(a, b);
                    assert!(diff < 1e-4, "prompt {row:?} step {step}: {diff}");
                }
            }
        }
    }
}

#[test]
fn empty_rows_are_refused() {
    let model = common::model(&Spec::llama());
    let err = model
        .next_token_logits(&[vec![1, 2], vec![]], 0, &ForwardOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("row 1"), "{err}");
    assert!(
        model
            .next_token_logits(&[], 0, &ForwardOptions::default())
            .is_err()
    );
    let none = model
        .generate_batch(&[], &GenerateOptions::greedy(4))
        .unwrap();
    assert!(none.is_empty());
}
