//! Hugging Face directories: a Llama-style model in bf16 split across two shards, and a GPT-2
//! model whose Conv1D weights must be transposed and split.

use std::collections::BTreeMap;
use std::path::Path;

use half::bf16;
use monoscope_formats::testing::{TinyLlama, XorShift};
use monoscope_formats::{Architecture, ChatMessage, HostData, RopeLayout, load_model};
use safetensors::{Dtype, tensor::TensorView};

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn write_shard(path: &Path, tensors: &Tensors, dtype: Dtype) {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (_, v))| {
            let b = match dtype {
                Dtype::BF16 => v
                    .iter()
                    .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            (k, b)
        })
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, (s, _))| {
            (
                k.clone(),
                TensorView::new(dtype, s.clone(), &bytes[k]).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A tokenizer.json with the tiny byte-level BPE, produced by our GGUF tokenizer builder.
fn write_tokenizer_json(dir: &Path) {
    let gguf = dir.join("tok.gguf");
    TinyLlama::default().write(&gguf).unwrap();
    let m = load_model(&gguf).unwrap();
    m.tokenizer
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    std::fs::remove_file(gguf).unwrap();
}

#[test]
fn llama_bf16_in_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (l, dm, h, kv, hd, ff, vocab) =
        (2usize, 32usize, 4usize, 2usize, 8usize, 48usize, 269usize);
    let mut rng = XorShift::new(7);
    let mut t = Tensors::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        t.insert(name, (shape, rng.vec(n, 1.0)));
    };
    add("model.embed_tokens.weight".into(), vec![vocab, dm]);
    for i in 0..l {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        add(p("input_layernorm.weight"), vec![dm]);
        add(p("post_attention_layernorm.weight"), vec![dm]);
        add(p("self_attn.q_proj.weight"), vec![h * hd, dm]);
        add(p("self_attn.q_proj.bias"), vec![h * hd]);
        add(p("self_attn.k_proj.weight"), vec![kv * hd, dm]);
        add(p("self_attn.v_proj.weight"), vec![kv * hd, dm]);
        add(p("self_attn.o_proj.weight"), vec![dm, h * hd]);
        add(p("mlp.gate_proj.weight"), vec![ff, dm]);
        add(p("mlp.up_proj.weight"), vec![ff, dm]);
        add(p("mlp.down_proj.weight"), vec![dm, ff]);
    }
    add("model.norm.weight".into(), vec![dm]);
    add("lm_head.weight".into(), vec![vocab, dm]);

    // Layer 1 and the head in shard 2, the rest in shard 1.
    let (s2, s1): (Tensors, Tensors) = t
        .clone()
        .into_iter()
        .partition(|(k, _)| k.contains("layers.1.") || k.starts_with("lm_head"));
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_shard(&d.join(names[0]), &s1, Dtype::BF16);
    write_shard(&d.join(names[1]), &s2, Dtype::BF16);
    let map: serde_json::Map<_, _> = s1
        .keys()
        .map(|k| (k.clone(), names[0].into()))
        .chain(s2.keys().map(|k| (k.clone(), names[1].into())))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let config = serde_json::json!({
        "model_type": "qwen2", "hidden_size": dm, "num_hidden_layers": l, "num_attention_heads": h,
        "num_key_value_heads": kv, "intermediate_size": ff, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "tie_word_embeddings": false, "max_position_embeddings": 512, "vocab_size": vocab,
        "bos_token_id": 1, "eos_token_id": [2, 0]
    });
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    write_tokenizer_json(d);
    let chat = serde_json::json!({"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"});
    std::fs::write(d.join("tokenizer_config.json"), chat.to_string()).unwrap();

    let m = load_model(d).unwrap();
    let c = &m.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.d_ff,
            c.vocab_size
        ),
        (l, dm, h, kv, hd, ff, vocab)
    );
    assert_eq!(
        (c.rope_theta, c.norm_eps, c.max_positions),
        (1e6, 1e-6, 512)
    );
    assert_eq!(c.rope_layout, RopeLayout::HalfSplit);
    assert!(!c.tied_embeddings);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2, 0])
    );
    assert_eq!(m.tensors.len(), t.len());
    let pairs = [
        ("embed_tokens", "model.embed_tokens.weight"),
        (
            "layers.1.attn_norm.weight",
            "model.layers.1.input_layernorm.weight",
        ),
        (
            "layers.0.mlp_norm.weight",
            "model.layers.0.post_attention_layernorm.weight",
        ),
        (
            "layers.1.q_proj.bias",
            "model.layers.1.self_attn.q_proj.bias",
        ),
        (
            "layers.1.k_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
        ),
        (
            "layers.0.down_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
        ),
        ("final_norm.weight", "model.norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ];
    for (canon, hf) in pairs {
        let (shape, vals) = &t[hf];
        let got = &m.tensors[canon];
        assert_eq!(&got.shape, shape, "{canon}");
        let want: Vec<f32> = vals.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
        assert_eq!(got.to_f32(), want, "{canon}");
        // Kept in the file's bf16, not widened at load (half the memory).
        assert!(matches!(got.data, HostData::Bf16(_)), "{canon}");
    }
    assert_eq!(m.tokenizer.encode(" the", false).unwrap().len(), 1);
    assert_eq!(
        m.tokenizer
            .apply_chat_template(&[ChatMessage::new("user", "x")], false)
            .unwrap(),
        "<|im_start|>user\nx<|im_end|>\n"
    );
}

/// A tiny GPT-2 directory (random f32 weights, tokenizer.json, no tokenizer_config.json).
fn write_tiny_gpt2(d: &Path, dm: usize, ff: usize, vocab: usize, ctx: usize) -> Tensors {
    let mut rng = XorShift::new(3);
    let mut t = Tensors::new();
    let mut add = |name: &str, shape: Vec<usize>| {
        let n = shape.iter().product();
        t.insert(name.to_string(), (shape, rng.vec(n, 1.0)));
    };
    add("transformer.wte.weight", vec![vocab, dm]);
    add("transformer.wpe.weight", vec![ctx, dm]);
    for s in ["ln_1", "ln_2"] {
        add(&format!("transformer.h.0.{s}.weight"), vec![dm]);
        add(&format!("transformer.h.0.{s}.bias"), vec![dm]);
    }
    add("transformer.h.0.attn.c_attn.weight", vec![dm, 3 * dm]);
    add("transformer.h.0.attn.c_attn.bias", vec![3 * dm]);
    add("transformer.h.0.attn.c_proj.weight", vec![dm, dm]);
    add("transformer.h.0.attn.c_proj.bias", vec![dm]);
    add("transformer.h.0.mlp.c_fc.weight", vec![dm, ff]);
    add("transformer.h.0.mlp.c_fc.bias", vec![ff]);
    add("transformer.h.0.mlp.c_proj.weight", vec![ff, dm]);
    add("transformer.h.0.mlp.c_proj.bias", vec![dm]);
    add("transformer.ln_f.weight", vec![dm]);
    add("transformer.ln_f.bias", vec![dm]);
    write_shard(&d.join("model.safetensors"), &t, Dtype::F32);
    let config = serde_json::json!({"model_type": "gpt2", "n_embd": dm, "n_layer": 1, "n_head": 2,
        "n_positions": ctx, "vocab_size": vocab, "n_inner": null, "bos_token_id": 0, "eos_token_id": 0});
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    write_tokenizer_json(d);
    t
}

#[test]
fn gpt2_conv1d_is_transposed_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dm, ff, vocab, ctx) = (8usize, 32usize, 269usize, 16usize);
    let t = write_tiny_gpt2(d, dm, ff, vocab, ctx);

    let m = load_model(d).unwrap();
    assert_eq!(m.config.architecture, Architecture::Gpt2);
    assert_eq!(
        (m.config.d_ff, m.config.head_dim, m.config.norm_eps),
        (ff, 4, 1e-5)
    );
    assert!(m.config.tied_embeddings);
    let at = |name: &str, r: usize, c: usize| {
        let x = &m.tensors[name];
        x.to_f32()[r * x.shape[1] + c]
    };
    let (_, c_attn) = &t["transformer.h.0.attn.c_attn.weight"]; // [in = dm, out = 3 dm]
    for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let w = format!("layers.0.{name}.weight");
        assert_eq!(m.tensors[&w].shape, vec![dm, dm]);
        for (o, i) in [(0, 0), (3, 5), (7, 1)] {
            assert_eq!(
                at(&w, o, i),
                c_attn[i * 3 * dm + k * dm + o],
                "{w}[{o}][{i}]"
            );
        }
        let b = &m.tensors[&format!("layers.0.{name}.bias")].to_f32();
        assert_eq!(
            b[..],
            t["transformer.h.0.attn.c_attn.bias"].1[k * dm..(k + 1) * dm]
        );
    }
    let (_, fc) = &t["transformer.h.0.mlp.c_fc.weight"]; // [dm, ff]
    assert_eq!(m.tensors["layers.0.up_proj.weight"].shape, vec![ff, dm]);
    assert_eq!(at("layers.0.up_proj.weight", 20, 3), fc[3 * ff + 20]);
    let (_, proj) = &t["transformer.h.0.mlp.c_proj.weight"]; // [ff, dm]
    assert_eq!(m.tensors["layers.0.down_proj.weight"].shape, vec![dm, ff]);
    assert_eq!(at("layers.0.down_proj.weight", 6, 25), proj[25 * dm + 6]);
    assert_eq!(
        m.tensors["embed_positions"].to_f32(),
        t["transformer.wpe.weight"].1
    );
    assert_eq!(
        m.tensors["final_norm.bias"].to_f32(),
        t["transformer.ln_f.bias"].1
    );
}

/// The template sees `tokenizer_config.json`'s `bos_token`/`eos_token` (string or AddedToken
/// object); a template that raises is an error naming the model and the message; encode_chat
/// does not add a second BOS after a template's own.
#[test]
fn chat_template_sees_tokenizer_config_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tiny_gpt2(d, 8, 32, 269, 16);
    let template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}\
        {{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}";
    let tc = serde_json::json!({
        "chat_template": template,
        "bos_token": {"__type": "AddedToken", "content": "<|im_start|>", "lstrip": false},
        "eos_token": "<|im_end|>",
    });
    std::fs::write(d.join("tokenizer_config.json"), tc.to_string()).unwrap();
    let m = load_model(d).unwrap();
    let tok = &m.tokenizer;
    assert!(!tok.chat_template().is_plain());
    let user = [ChatMessage::new("user", "hi")];
    assert_eq!(
        tok.apply_chat_template(&user, true).unwrap(),
        "<|im_start|>[user] hi<|im_end|>"
    );
    let e = tok
        .apply_chat_template(&[ChatMessage::new("system", "s")], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("System role not supported"), "{e}");
    assert!(e.contains(&d.display().to_string()), "{e}");

    // A null token is an empty string; a broken template falls back to the plain format.
    let tc = serde_json::json!({"chat_template": "{% for %}", "bos_token": null});
    std::fs::write(d.join("tokenizer_config.json"), tc.to_string()).unwrap();
    let m = load_model(d).unwrap();
    assert!(m.tokenizer.chat_template().is_plain());
    assert_eq!(m.tokenizer.template_tokens().bos_token, "");
    assert_eq!(
        m.tokenizer.apply_chat_template(&user, true).unwrap(),
        "user: hi\nassistant: "
    );
}
