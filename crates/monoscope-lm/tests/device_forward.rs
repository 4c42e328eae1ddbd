//! The device path (burn's ops in `layers`, what a GPU runs) against the CPU host path, model
//! family by model family: every hook and the logits of a padded batch, KV-cached and batched
//! generation, interventions, and 16-bit precision.
//!
//! The host model runs on `Device::flex()` with the default options; the device model on the
//! test device (`MONOSCOPE_TEST_DEVICE`, default the CPU, see `monoscope_device::test_device`)
//! with `host_kernels = false`, so that on a machine without a GPU it is burn's CPU backend
//! running the device path. Both are f32: they differ by summation order only, and are held to
//! [`TOL`] (relative to the tensor's largest magnitude, at least 1). Padding positions are
//! meaningless (see `TokenBatch`) and not compared.

mod common;

use std::path::{Path, PathBuf};

use common::Spec;
use monoscope_formats::{LoadedModel, RopeLayout};
use monoscope_lm::{
    Device, ForwardOptions, GenerateOptions, HookContext, HookName, HookPoint, Interventions,
    LmError, Logits, MatmulKind, Model, ModelOptions, PadSide, Precision, Tensor, TokenBatch,
};

/// f32 on both paths: max |device - host| ≤ TOL · max(1, max |host|). Measured on burn's CPU
/// backend: at most about 1e-6 relative (summation order); the margin is for GPU kernels.
const TOL: f32 = 1e-4;

/// 16-bit precision against f32 on the same device, logits: max |half - f32| ≤ HALF_TOL ·
/// max(1, max |f32|), and the argmax the same at [`HALF_ARGMAX`] of the valid positions or
/// more (16-bit rounding may flip near-ties of these random models).
const HALF_TOL: f32 = 0.1;
const HALF_ARGMAX: f64 = 0.9;

/// One model to build twice.
struct Case {
    name: String,
    load: Box<dyn Fn() -> LoadedModel>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers")
}

/// The tiny models of `tests/common` (GQA Llama in the GGUF RoPE layout, Qwen2-style biases
/// with a tied head, multi-query attention, GPT-2) and every family of the transformers
/// fixtures (Llama with each RoPE scaling, Mistral, Qwen2 with a sliding window, Qwen3,
/// Phi-3 with LongRoPE, Gemma 1/2/3, OLMo-2, GPT-NeoX, GPT-2).
fn cases() -> Vec<Case> {
    let specs = [
        ("tiny llama (GQA, GGUF layout)", Spec::llama()),
        (
            "tiny qwen2-style (biases, tied)",
            Spec {
                rope_layout: RopeLayout::HalfSplit,
                qkv_bias: true,
                tied: true,
                seed: 5,
                ..Spec::llama()
            },
        ),
        (
            "tiny multi-query",
            Spec {
                n_kv_heads: 1,
                seed: 9,
                ..Spec::llama()
            },
        ),
        ("tiny gpt2", Spec::gpt2()),
    ];
    let mut cases: Vec<Case> = specs
        .into_iter()
        .map(|(name, spec)| Case {
            name: name.into(),
            load: Box::new(move || common::loaded(&spec)),
        })
        .collect();
    for name in [
        "llama",
        "llama-rope-linear",
        "llama-rope-dynamic",
        "llama-rope-llama3",
        "llama-rope-yarn",
        "mistral",
        "qwen2",
        "qwen2-sliding",
        "qwen3",
        "phi3",
        "phi3-longrope",
        "gemma",
        "gemma2",
        "gemma3",
        "olmo2",
        "gpt_neox",
        "gpt2",
    ] {
        let dir = fixtures().join(name);
        cases.push(Case {
            name: name.into(),
            load: Box::new(move || {
                monoscope_formats::load_model(&dir)
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            }),
        });
    }
    cases
}

fn test_device() -> Device {
    monoscope_device::test_device().1
}

fn device_options() -> ModelOptions {
    ModelOptions::default().with_host_kernels(false)
}

/// The case on the CPU with the host kernels, and on the test device on the device path.
fn both(case: &Case) -> (Model, Model) {
    let host = Model::from_loaded((case.load)(), &Device::flex()).expect("host model");
    let device = Model::from_loaded_with((case.load)(), &test_device(), &device_options())
        .expect("device model");
    (host, device)
}

/// Rows of different lengths (ids folded into the vocabulary), long enough to pass the
/// fixtures' sliding windows of 4.
fn rows(vocab: usize) -> Vec<Vec<u32>> {
    [
        vec![1, 17, 42, 5, 63, 8, 8, 30, 2, 11, 50],
        vec![1, 3, 9, 27, 19, 57],
        vec![1, 60, 33],
    ]
    .into_iter()
    .map(|r| r.into_iter().map(|id| id % vocab as u32).collect())
    .collect()
}

/// `max |a - b|` over the valid positions of `[batch, seq, width]` tensors, and the scale
/// `max(1, max |b|)` it is judged against.
fn max_diff(a: &[f32], b: &[f32], batch: &TokenBatch, width: usize) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut diff, mut scale) = (0.0f32, 1.0f32);
    for r in 0..batch.batch() {
        for c in (0..batch.seq()).filter(|&c| batch.is_valid(r, c)) {
            let at = (r * batch.seq() + c) * width;
            for (x, y) in a[at..at + width].iter().zip(&b[at..at + width]) {
                diff = diff.max((x - y).abs());
                scale = scale.max(y.abs());
            }
        }
    }
    (diff, scale)
}

/// Largest `diff / scale` seen by a test, printed at its end (run with `--nocapture`).
#[derive(Default)]
struct Worst(f32, String);

impl Worst {
    fn check(&mut self, what: &str, (diff, scale): (f32, f32), tol: f32) {
        assert!(diff.is_finite(), "{what}: not finite");
        let rel = diff / scale;
        assert!(
            rel <= tol,
            "{what}: max diff {diff:e} at scale {scale} ({rel:e} relative, tolerance {tol:e})"
        );
        if rel >= self.0 {
            *self = Worst(rel, what.to_string());
        }
    }

    fn report(&self, test: &str) {
        println!(
            "{test}: largest relative difference {:e} ({})",
            self.0, self.1
        );
    }
}

fn all_hooks_and_logits(model: &Model) -> ForwardOptions {
    ForwardOptions {
        record: model.hook_names(),
        logits: Logits::All,
        ..ForwardOptions::default()
    }
}

#[test]
fn every_hook_and_the_logits_match_the_host_path() {
    let dev = test_device();
    let mut worst = Worst::default();
    for case in cases() {
        let (host, device) = both(&case);
        let vocab = host.config().vocab_size;
        for side in [PadSide::Left, PadSide::Right] {
            let batch = TokenBatch::padded(&rows(vocab), side, 0).unwrap();
            let options = all_hooks_and_logits(&host);
            let h = host.forward(&batch, &options).unwrap();
            let d = device.forward(&batch, &options).unwrap();
            assert_eq!(h.activations.len(), host.hook_names().len());
            for hook in host.hook_names() {
                // Names come from the model; `Model::hook` accepts each.
                assert_eq!(device.hook(&hook.to_string()).unwrap(), hook);
                let recorded = d.activation(&hook).unwrap();
                assert_eq!(
                    recorded.device(),
                    dev,
                    "{}: {hook} left the device",
                    case.name
                );
                let width = device.hook_width(&hook);
                worst.check(
                    &format!("{} {side:?} {hook}", case.name),
                    max_diff(
                        &d.activation_host(&hook).unwrap(),
                        &h.activation_host(&hook).unwrap(),
                        &batch,
                        width,
                    ),
                    TOL,
                );
            }
            assert_eq!(d.logits.as_ref().unwrap().device(), dev);
            worst.check(
                &format!("{} {side:?} logits", case.name),
                max_diff(
                    &d.logits_host().unwrap(),
                    &h.logits_host().unwrap(),
                    &batch,
                    vocab,
                ),
                TOL,
            );
        }
    }
    worst.report("hooks and logits");
}

/// The index of the largest value, lowest on ties (as greedy sampling picks).
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > row[best] { i } else { best })
}

#[test]
fn cached_generation_matches_the_host_path() {
    let mut worst = Worst::default();
    for case in cases() {
        let (host, device) = both(&case);
        let prompts = rows(host.config().vocab_size);
        let options = GenerateOptions {
            keep_logits: true,
            // A fixed number of steps, whatever the random models emit.
            stop_tokens: Some(vec![]),
            ..GenerateOptions::greedy(10)
        };
        let h = host.generate(&prompts[0], &options).unwrap();
        let d = device.generate(&prompts[0], &options).unwrap();
        for (step, (dl, hl)) in d.logits.iter().zip(&h.logits).enumerate() {
            let scale = hl.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let diff = dl
                .iter()
                .zip(hl)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            worst.check(
                &format!("{} generate step {step}", case.name),
                (diff, scale),
                TOL,
            );
        }
        assert_eq!(d.tokens, h.tokens, "{}: greedy tokens", case.name);

        // Three prompts that share a prefix (run once, its cache copied to every row), one
        // shorter than the others (left padding between prefix and row).
        let mut batch_prompts = prompts.clone();
        batch_prompts[1] = [&prompts[0][..4], &prompts[1][..]].concat();
        batch_prompts[2] = [&prompts[0][..4], &prompts[2][..1]].concat();
        let h = host.generate_batch(&batch_prompts, &options).unwrap();
        let d = device.generate_batch(&batch_prompts, &options).unwrap();
        for (row, (d, h)) in d.iter().zip(&h).enumerate() {
            assert_eq!(d.tokens, h.tokens, "{} generate_batch row {row}", case.name);
            for (step, (dl, hl)) in d.logits.iter().zip(&h.logits).enumerate() {
                let scale = hl.iter().fold(1.0f32, |m, x| m.max(x.abs()));
                let diff = dl
                    .iter()
                    .zip(hl)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                worst.check(
                    &format!("{} generate_batch row {row} step {step}", case.name),
                    (diff, scale),
                    TOL,
                );
            }
        }

        // Without logits kept, the device path picks the greedy tokens on its device.
        let picked = GenerateOptions {
            keep_logits: false,
            ..options.clone()
        };
        let h = host.generate_batch(&batch_prompts, &picked).unwrap();
        let d = device.generate_batch(&batch_prompts, &picked).unwrap();
        for (row, (d, h)) in d.iter().zip(&h).enumerate() {
            assert_eq!(d.tokens, h.tokens, "{} device picks, row {row}", case.name);
            assert!(d.logits.is_empty() && h.tokens.len() == 10);
        }

        let h = host
            .next_token_logits(&batch_prompts, 0, &ForwardOptions::default())
            .unwrap();
        let d = device
            .next_token_logits(&batch_prompts, 0, &ForwardOptions::default())
            .unwrap();
        for (row, (dl, hl)) in d.iter().zip(&h).enumerate() {
            let scale = hl.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let diff = dl
                .iter()
                .zip(hl)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            worst.check(
                &format!("{} next_token_logits row {row}", case.name),
                (diff, scale),
                TOL,
            );
            assert_eq!(argmax(dl), argmax(hl), "{} row {row}", case.name);
        }
    }
    worst.report("generation");
}

/// Interventions that replace activations inside attention, inside the MLP and on the
/// residual stream: the same function of the activation on both paths, built on whatever
/// device the activation is on.
fn interventions(model: &Model) -> Interventions {
    let last = model.n_layers() - 1;
    Interventions::new()
        .with(
            HookName::resid_post(0),
            |_: &HookName, x: Tensor<3>, _: &HookContext| x.clone() * 0.5 + x.tanh(),
        )
        .with(
            HookName::new(HookPoint::Z(0)),
            // Head 0 ablated.
            |_: &HookName, x: Tensor<3>, _: &HookContext| {
                let [b, t, w] = x.dims();
                let heads = x.clone().reshape([b, t, 4, w / 4]);
                let zero = Tensor::<4>::zeros([b, t, 1, w / 4], &x.device());
                Tensor::cat(vec![zero, heads.narrow(2, 1, 3)], 2).reshape([b, t, w])
            },
        )
        .with(
            HookName::new(HookPoint::MlpPost(last)),
            |_: &HookName, x: Tensor<3>, ctx: &HookContext| {
                // Replaced by a constant after the first position: uses the context too.
                if ctx.offset > 0 {
                    x.ones_like() * 0.25
                } else {
                    x * 2.0
                }
            },
        )
}

#[test]
fn interventions_give_the_same_result_on_both_paths() {
    let mut worst = Worst::default();
    for case in cases() {
        let (host, device) = both(&case);
        assert_eq!(host.config().n_heads, 4, "the interventions assume 4 heads");
        let vocab = host.config().vocab_size;
        let batch = TokenBatch::padded(&rows(vocab), PadSide::Left, 0).unwrap();
        let downstream = HookName::resid_pre(host.n_layers() - 1);
        let run = |model: &Model| {
            let out = model
                .forward(
                    &batch,
                    &ForwardOptions {
                        record: vec![downstream],
                        interventions: interventions(model),
                        logits: Logits::All,
                        ..ForwardOptions::default()
                    },
                )
                .unwrap();
            (
                out.activation_host(&downstream).unwrap(),
                out.logits_host().unwrap(),
            )
        };
        let ((h_act, h_logits), (d_act, d_logits)) = (run(&host), run(&device));
        let plain = host
            .forward(&batch, &ForwardOptions::logits(Interventions::new()))
            .unwrap()
            .logits_host()
            .unwrap();
        let (changed, _) = max_diff(&h_logits, &plain, &batch, vocab);
        assert!(
            changed > 1e-3,
            "{}: the interventions change nothing",
            case.name
        );
        worst.check(
            &format!("{} {downstream}", case.name),
            max_diff(&d_act, &h_act, &batch, host.d_model()),
            TOL,
        );
        worst.check(
            &format!("{} logits", case.name),
            max_diff(&d_logits, &h_logits, &batch, vocab),
            TOL,
        );

        // And at generated positions, through the cache.
        let options = GenerateOptions {
            keep_logits: true,
            stop_tokens: Some(vec![]),
            ..GenerateOptions::greedy(6)
        };
        let prompt = &rows(vocab)[0];
        let h = host
            .generate(
                prompt,
                &options.clone().with_interventions(interventions(&host)),
            )
            .unwrap();
        let d = device
            .generate(
                prompt,
                &options.clone().with_interventions(interventions(&device)),
            )
            .unwrap();
        assert_eq!(d.tokens, h.tokens, "{}: steered tokens", case.name);
    }
    worst.report("interventions");
}

#[test]
fn half_precision_logits_follow_f32() {
    let (spec, dev) = monoscope_device::test_device();
    let mut checked = 0;
    for precision in [Precision::Bf16, Precision::F16] {
        if dev == Device::flex() {
            // The CPU refuses 16-bit precision, by name.
            let err = Model::from_loaded_with(
                common::loaded(&Spec::llama()),
                &dev,
                &device_options().with_precision(precision),
            )
            .expect_err("the CPU refuses 16-bit precision");
            let text = err.to_string();
            assert!(matches!(
                err,
                LmError::Setting {
                    name: "precision",
                    ..
                }
            ));
            assert!(
                text.contains("`precision`") && text.contains(precision.name()),
                "{text}"
            );
            println!(
                "test device `{spec}` is the CPU, which refuses {precision}: numbers not \
                 checked (MONOSCOPE_TEST_DEVICE=wgpu or cuda checks them)"
            );
            continue;
        }
        // A device may lack a type's matrix product (wgpu has no bf16): refused at load, by
        // name, and not a number to check.
        if let Err(err) = Model::from_loaded_with(
            common::loaded(&Spec::llama()),
            &dev,
            &device_options().with_precision(precision),
        ) {
            let text = err.to_string();
            assert!(
                matches!(
                    err,
                    LmError::Setting {
                        name: "precision",
                        ..
                    }
                ) && text.contains("has no")
                    && text.contains(precision.name()),
                "{text}"
            );
            println!("test device `{spec}` refuses {precision}: {text}");
            continue;
        }
        checked += 1;
        let (mut worst, mut agree, mut positions) = (Worst::default(), 0usize, 0usize);
        for case in cases() {
            let full =
                Model::from_loaded_with((case.load)(), &dev, &device_options()).expect("f32 model");
            let half = Model::from_loaded_with(
                (case.load)(),
                &dev,
                &device_options().with_precision(precision),
            )
            .expect("16-bit model");
            assert_eq!(half.precision(), precision);
            assert!(half.weight_bytes() <= full.weight_bytes());
            let vocab = full.config().vocab_size;
            let batch = TokenBatch::padded(&rows(vocab), PadSide::Right, 0).unwrap();
            let options = ForwardOptions::logits(Interventions::new());
            let want = full
                .forward(&batch, &options)
                .unwrap()
                .logits_host()
                .unwrap();
            let got = half
                .forward(&batch, &options)
                .unwrap()
                .logits_host()
                .unwrap();
            worst.check(
                &format!("{} {precision} logits", case.name),
                max_diff(&got, &want, &batch, vocab),
                HALF_TOL,
            );
            for r in 0..batch.batch() {
                for c in (0..batch.seq()).filter(|&c| batch.is_valid(r, c)) {
                    let at = (r * batch.seq() + c) * vocab;
                    positions += 1;
                    agree +=
                        usize::from(argmax(&got[at..at + vocab]) == argmax(&want[at..at + vocab]));
                }
            }
        }
        let share = agree as f64 / positions as f64;
        println!("{precision}: argmax agrees at {agree} of {positions} positions");
        assert!(
            share >= HALF_ARGMAX,
            "{precision}: argmax agrees at {share:.3}"
        );
        worst.report(&format!("{precision} against f32"));
    }
    println!("test device `{spec}`: {checked} 16-bit precision(s) checked against f32");
}

#[test]
fn options_parse_and_print() {
    for p in [Precision::F32, Precision::F16, Precision::Bf16] {
        assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{p}\""));
        assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
    }
    assert!("fp16".parse::<Precision>().unwrap_err().contains("bf16"));
    let defaults = ModelOptions::default();
    assert_eq!(defaults.precision, Precision::F32);
    assert!(defaults.host_kernels);
    assert_eq!(
        ModelOptions::with_matmul(monoscope_lm::MatmulKind::Int8),
        ModelOptions {
            matmul: monoscope_lm::MatmulKind::Int8,
            ..ModelOptions::default()
        }
    );
    let spec = monoscope_lm::ModelSpec::new("m.gguf").with_precision(Precision::Bf16);
    assert_eq!(spec.options().precision, Precision::Bf16);
    // Int8 is a host kernel: without them the model runs f32 products.
    let model = Model::from_loaded_with(
        common::loaded(&Spec::llama()),
        &Device::flex(),
        &ModelOptions::with_matmul(monoscope_lm::MatmulKind::Int8).with_host_kernels(false),
    )
    .unwrap();
    assert_eq!(model.matmul_kind(), monoscope_lm::MatmulKind::F32);
    assert!(!model.host_kernels());
}

#[test]
fn int8_products_are_refused_off_the_cpu() {
    let (spec, dev) = monoscope_device::test_device();
    let int8 = ModelOptions::with_matmul(MatmulKind::Int8);
    let loaded = Model::from_loaded_with(common::loaded(&Spec::llama()), &dev, &int8);
    if dev == Device::flex() {
        let model = loaded.expect("the CPU runs the int8 kernels");
        assert_eq!(model.matmul_kind(), MatmulKind::Int8);
        println!(
            "test device `{spec}` is the CPU: int8 runs there (MONOSCOPE_TEST_DEVICE=wgpu checks the refusal)"
        );
        return;
    }
    let Err(err) = loaded else {
        panic!("int8 on a GPU device would quietly multiply in f32");
    };
    let text = err.to_string();
    assert!(
        matches!(err, LmError::Setting { name: "matmul", .. }),
        "{text}"
    );
    assert!(
        text.contains("int8") && text.contains("precision"),
        "{text}"
    );
}
