//! The forward pass against the naive reference: every hook and the logits, for GQA Llama in
//! both RoPE layouts, Qwen2-style biases, tied and untied heads, GPT-2, and padded batches.

mod common;

use common::{Spec, reference, rel_err};
use monoscope_formats::{LoadedModel, RopeLayout};
use monoscope_lm::{
    ForwardOptions, HookContext, HookName, Interventions, Logits, Model, PadSide, Tensor,
    TokenBatch,
};

const TOL: f64 = 1e-4;

fn full_options(model: &Model) -> ForwardOptions {
    ForwardOptions {
        record: common::residual_hooks(model),
        logits: Logits::All,
        ..ForwardOptions::default()
    }
}

/// Runs `rows` as one padded batch and checks every hook and the logits of each row's real
/// tokens against the reference run on that row alone.
fn check_against_reference(loaded: &LoadedModel, rows: &[Vec<u32>], side: PadSide) {
    let model = Model::from_loaded(
        LoadedModel {
            config: loaded.config.clone(),
            tensors: loaded.tensors.clone(),
            tokenizer: common::tiny_tokenizer(),
            name: loaded.name.clone(),
            sha256: String::new(),
        },
        &monoscope_lm::Device::flex(),
    )
    .expect("model builds");
    let batch = TokenBatch::padded(rows, side, 0).unwrap();
    let out = model.forward(&batch, &full_options(&model)).unwrap();
    let (seq, d, vocab) = (batch.seq(), common::D_MODEL, common::VOCAB);
    let logits = out.logits_host().unwrap();
    for (r, row) in rows.iter().enumerate() {
        let want = reference::forward(loaded, row);
        let cols: Vec<usize> = (0..seq).filter(|&c| batch.is_valid(r, c)).collect();
        assert_eq!(cols.len(), row.len());
        let pick = |flat: &[f32], width: usize| -> Vec<f32> {
            cols.iter()
                .flat_map(|&c| flat[(r * seq + c) * width..(r * seq + c + 1) * width].to_vec())
                .collect()
        };
        for hook in common::residual_hooks(&model) {
            let got = pick(&out.activation_host(&hook).unwrap(), d);
            let err = rel_err(&got, &want.hook_flat(&hook.to_string()));
            assert!(err < TOL, "row {r} {hook}: relative error {err:e}");
        }
        let err = rel_err(&pick(&logits, vocab), &want.logits_flat());
        assert!(err < TOL, "row {r} logits: relative error {err:e}");
    }
}

fn rows() -> Vec<Vec<u32>> {
    vec![
        vec![1, 17, 42, 5, 63, 8, 8, 30, 2, 11, 50],
        vec![1, 3, 9, 27, 19, 57, 44, 12, 0, 33, 21],
    ]
}

#[test]
fn llama_gqa_gguf_layout_untied_matches_reference() {
    check_against_reference(&common::loaded(&Spec::llama()), &rows(), PadSide::Right);
}

#[test]
fn qwen2_style_biases_hf_layout_tied_matches_reference() {
    let spec = Spec {
        rope_layout: RopeLayout::HalfSplit,
        qkv_bias: true,
        tied: true,
        seed: 5,
        ..Spec::llama()
    };
    check_against_reference(&common::loaded(&spec), &rows(), PadSide::Right);
}

#[test]
fn multi_query_attention_matches_reference() {
    let spec = Spec {
        n_kv_heads: 1,
        qkv_bias: true,
        seed: 9,
        ..Spec::llama()
    };
    check_against_reference(&common::loaded(&spec), &rows(), PadSide::Right);
}

#[test]
fn gpt2_matches_reference() {
    check_against_reference(&common::loaded(&Spec::gpt2()), &rows(), PadSide::Right);
}

#[test]
fn padded_batches_match_each_row_alone() {
    let ragged = vec![
        vec![1, 17, 42, 5, 63, 8],
        vec![1, 3, 9, 27, 19, 57, 44, 12, 0, 33, 21],
        vec![1, 60],
    ];
    for spec in [Spec::llama(), Spec::gpt2()] {
        for side in [PadSide::Left, PadSide::Right] {
            check_against_reference(&common::loaded(&spec), &ragged, side);
        }
    }
}

/// llama.cpp's conversion permutation: within each head, row `2i + j` of the GGUF matrix is row
/// `j * head_dim/2 + i` of the Hugging Face one.
fn hf_to_gguf_rows(w: &[f32], head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for head in 0..w.len() / (head_dim * cols) {
        for i in 0..half {
            for j in 0..2 {
                let dst = (head * head_dim + 2 * i + j) * cols;
                let src = (head * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

#[test]
fn rope_layouts_give_identical_outputs_for_permuted_weights() {
    let hf_spec = Spec {
        rope_layout: RopeLayout::HalfSplit,
        qkv_bias: true,
        seed: 11,
        ..Spec::llama()
    };
    let hf = common::loaded(&hf_spec);
    let mut gguf = common::loaded(&hf_spec);
    gguf.config.rope_layout = RopeLayout::AdjacentPairs;
    for (name, t) in gguf.tensors.iter_mut() {
        let is_qk = ["q_proj", "k_proj"].iter().any(|p| name.contains(p));
        if is_qk {
            let cols = if t.shape.len() == 2 { t.shape[1] } else { 1 };
            t.data = hf_to_gguf_rows(&t.to_f32(), common::HEAD_DIM, cols).into();
        }
    }
    let batch = TokenBatch::from_rows(&rows()).unwrap();
    let run = |loaded: LoadedModel| {
        let model = Model::from_loaded(loaded, &monoscope_lm::Device::flex()).unwrap();
        model
            .forward(&batch, &full_options(&model))
            .unwrap()
            .logits_host()
            .unwrap()
    };
    let a = run(hf);
    // Sanity: without the permutation the layouts really differ.
    let mut unpermuted = common::loaded(&hf_spec);
    unpermuted.config.rope_layout = RopeLayout::AdjacentPairs;
    let c = run(unpermuted);
    let b = run(gguf);
    let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    assert!(rel_err(&b, &a64) < 1e-5, "permuted GGUF layout differs");
    assert!(
        rel_err(&c, &a64) > 1e-2,
        "layouts indistinguishable: the test proves nothing"
    );
}

#[test]
fn stop_after_hooks_gives_the_full_forward_activation() {
    for spec in [Spec::llama(), Spec::gpt2()] {
        let model = common::model(&spec);
        let batch = TokenBatch::from_rows(&rows()).unwrap();
        let hook = model.hook("blocks.0.hook_resid_post").unwrap();
        let full = model.forward(&batch, &full_options(&model)).unwrap();
        let stopped = model
            .forward(&batch, &ForwardOptions::capture(vec![hook]))
            .unwrap();
        assert!(stopped.logits.is_none());
        assert_eq!(stopped.activations.len(), 1);
        assert_eq!(
            stopped.activation_host(&hook).unwrap(),
            full.activation_host(&hook).unwrap()
        );
        // resid_pre of a later block is reached without running that block.
        let pre = HookName::resid_pre(1);
        let stopped = model
            .forward(&batch, &ForwardOptions::capture(vec![pre]))
            .unwrap();
        assert_eq!(
            stopped.activation_host(&pre).unwrap(),
            full.activation_host(&hook).unwrap()
        );
    }
}

#[test]
fn identity_intervention_keeps_logits_and_a_real_one_changes_them() {
    let model = common::model(&Spec::llama());
    let batch = TokenBatch::from_rows(&rows()).unwrap();
    let clean = model
        .forward(&batch, &ForwardOptions::logits(Interventions::new()))
        .unwrap()
        .logits_host()
        .unwrap();
    let mut identity = Interventions::new();
    for hook in model.hook_names() {
        identity = identity.with(hook, |_: &HookName, x: Tensor<3>, _: &HookContext| x);
    }
    let same = model
        .forward(&batch, &ForwardOptions::logits(identity))
        .unwrap()
        .logits_host()
        .unwrap();
    assert_eq!(clean, same);
    let zero_mlp = Interventions::new().with(
        HookName::mlp_out(0),
        |_: &HookName, x: Tensor<3>, _: &HookContext| x.zeros_like(),
    );
    let ablated = model
        .forward(&batch, &ForwardOptions::logits(zero_mlp))
        .unwrap()
        .logits_host()
        .unwrap();
    assert_ne!(clean, ablated);
}

#[test]
fn intervention_changing_the_shape_is_an_error() {
    let model = common::model(&Spec::llama());
    let batch = TokenBatch::single(&[1, 2, 3]).unwrap();
    let bad = Interventions::new().with(
        HookName::resid_post(0),
        |_: &HookName, x: Tensor<3>, _: &HookContext| x.narrow(1, 0, 1),
    );
    let err = model
        .forward(&batch, &ForwardOptions::logits(bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.hook_resid_post"), "{err}");
}

#[test]
fn hooks_inside_attention_and_the_mlp_record_and_replace() {
    let model = common::model(&Spec::llama());
    let batch = TokenBatch::from_rows(&rows()).unwrap();
    let zero = |_: &HookName, x: Tensor<3>, _: &HookContext| x.zeros_like();
    let z = model.hook("blocks.0.attn.hook_z").unwrap();
    let post = model.hook("blocks.1.mlp.hook_post").unwrap();
    let q = model.hook("blocks.1.attn.hook_q").unwrap();
    let out = model
        .forward(
            &batch,
            &ForwardOptions {
                record: vec![z, q, HookName::attn_out(0), HookName::mlp_out(1)],
                interventions: Interventions::new().with(z, zero).with(post, zero),
                ..ForwardOptions::default()
            },
        )
        .unwrap();
    let (b, t) = (batch.batch(), batch.seq());
    // Without biases on o_proj and down_proj, zero inputs give zero outputs.
    for hook in [z, HookName::attn_out(0), HookName::mlp_out(1)] {
        let x = out.activation_host(&hook).unwrap();
        assert!(x.iter().all(|&v| v == 0.0), "{hook} is not all zero");
    }
    assert_eq!(
        out.activation_host(&z).unwrap().len(),
        b * t * model.hook_width(&z)
    );
    assert_eq!(
        model.hook_width(&q),
        model.config().n_heads * model.config().head_dim
    );
    assert_eq!(model.hook_width(&post), model.config().d_ff);
    // An intervention at an inner hook must keep its shape.
    let wrong = Interventions::new().with(q, |_: &HookName, x: Tensor<3>, _: &HookContext| {
        x.narrow(2, 0, 1)
    });
    let err = model
        .forward(&batch, &ForwardOptions::logits(wrong))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.1.attn.hook_q"), "{err}");
}
