//! 16-bit checkpoints stay 16-bit in the model and compute exactly what the same weights
//! widened to f32 compute: every hook and the logits, tied and untied heads, and the feature
//! directions read through `W_O` / `W_down`.

mod common;

use common::Spec;
use half::{bf16, f16};
use monoscope_formats::testing::TinyLlama;
use monoscope_formats::{HostData, LoadedModel, load_model};
use monoscope_lm::{
    Device, ForwardOptions, HookName, Logits, MatmulKind, Model, ModelOptions, Tensor, TokenBatch,
    to_host,
};

/// Every matrix (two-dimensional tensor) of `loaded` rounded to a 16-bit type by `narrow`, and
/// the same rounded values widened back to f32.
fn narrowed(spec: &Spec, narrow: fn(&[f32]) -> HostData) -> (LoadedModel, LoadedModel) {
    let (mut compact, mut wide) = (common::loaded(spec), common::loaded(spec));
    for (name, t) in compact.tensors.iter_mut() {
        if t.shape.len() == 2 {
            t.data = narrow(&t.to_f32());
            wide.tensors.get_mut(name).unwrap().data = t.to_f32().into();
        }
    }
    (compact, wide)
}

fn to_bf16(v: &[f32]) -> HostData {
    HostData::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect())
}

fn to_f16(v: &[f32]) -> HostData {
    HostData::F16(v.iter().map(|&x| f16::from_f32(x)).collect())
}

fn run(model: &Model) -> Vec<Vec<f32>> {
    let hooks = model.hook_names();
    let batch =
        TokenBatch::from_rows(&[vec![1, 5, 9, 2, 33, 7], vec![4, 4, 60, 12, 0, 3]]).unwrap();
    let options = ForwardOptions {
        record: hooks.clone(),
        logits: Logits::All,
        ..ForwardOptions::default()
    };
    let out = model.forward(&batch, &options).unwrap();
    let mut all: Vec<Vec<f32>> = hooks
        .iter()
        .map(|h| out.activation_host(h).unwrap())
        .collect();
    all.push(out.logits_host().unwrap());
    all
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn sixteen_bit_weights_compute_what_their_f32_widening_computes() {
    for spec in [
        Spec::llama(),
        Spec {
            tied: true,
            qkv_bias: true,
            ..Spec::llama()
        },
        Spec::gpt2(),
    ] {
        for narrow in [to_bf16 as fn(&[f32]) -> HostData, to_f16] {
            let (compact, wide) = narrowed(&spec, narrow);
            let device = Device::flex();
            let compact = Model::from_loaded(compact, &device).unwrap();
            let wide = Model::from_loaded(wide, &device).unwrap();
            // Matrices at 2 bytes instead of 4; norms and biases stay f32.
            let ratio = compact.weight_bytes() as f64 / wide.weight_bytes() as f64;
            assert!((0.5..0.6).contains(&ratio), "{ratio}");
            for (i, (a, b)) in run(&compact).iter().zip(run(&wide)).enumerate() {
                // The same products; only the unembedding's blocking may differ.
                let err = max_rel(a, &b);
                assert!(err < 1e-6, "{:?} output {i}: {err:e}", spec.architecture);
            }
            let directions = Tensor::<2>::ones([2, common::N_HEADS * common::HEAD_DIM], &device);
            let hook: HookName = "blocks.1.attn.hook_z".parse().unwrap();
            let a = compact
                .residual_direction(&hook, directions.clone())
                .unwrap();
            let b = wide.residual_direction(&hook, directions).unwrap();
            let (a, b) = (to_host(a, "a").unwrap(), to_host(b, "b").unwrap());
            assert_eq!(a, b);
        }
    }
}

#[test]
fn int8_models_read_feature_directions_from_the_packed_weights() {
    let spec = Spec::llama();
    let device = Device::flex();
    let int8 = Model::from_loaded_with(
        common::loaded(&spec),
        &device,
        &ModelOptions::with_matmul(MatmulKind::Int8),
    )
    .unwrap();
    let f32 = common::model(&spec);
    for hook in ["blocks.0.attn.hook_z", "blocks.1.mlp.hook_post"] {
        let hook: HookName = hook.parse().unwrap();
        let width = f32.hook_width(&hook);
        let directions = Tensor::<2>::ones([3, width], &device);
        let a = int8.residual_direction(&hook, directions.clone()).unwrap();
        let b = f32.residual_direction(&hook, directions).unwrap();
        let (a, b) = (to_host(a, "a").unwrap(), to_host(b, "b").unwrap());
        let err = max_rel(&a, &b);
        // Int8 weight rounding, summed over the hook's width: close, never exact.
        assert!(err > 0.0 && err < 0.02, "{hook}: {err:e}");
    }
}

#[test]
fn quantized_gguf_weights_are_packed_from_their_blocks_as_from_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.Q4_1.gguf");
    TinyLlama::default().write(&path).unwrap();
    let device = Device::flex();
    let int8 = || ModelOptions::with_matmul(MatmulKind::Int8);
    let blocks = Model::from_loaded_with(load_model(&path).unwrap(), &device, &int8()).unwrap();
    let values = Model::from_loaded_with(
        common::widened(load_model(&path).unwrap()),
        &device,
        &int8(),
    )
    .unwrap();
    assert_eq!(run(&blocks), run(&values));
    assert_eq!(blocks.weight_bytes(), values.weight_bytes());
    // f32 arithmetic holds the dequantised values: the same numbers as from an f32 file.
    let f32_blocks = Model::from_loaded(load_model(&path).unwrap(), &device).unwrap();
    let f32_values =
        Model::from_loaded(common::widened(load_model(&path).unwrap()), &device).unwrap();
    assert_eq!(run(&f32_blocks), run(&f32_values));
}
