//! A tiny model written with the GGUF writer loads back with the right config, names, shapes,
//! values and tokenizer; every metadata type survives the trip.

use monoscope_formats::testing::TinyLlama;
use monoscope_formats::{
    ChatMessage, GgmlType, GgufFile, GgufWriter, MetadataValue as V, RopeLayout, load_model,
};

#[test]
fn tiny_llama_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama.Q4_1.gguf");
    let spec = TinyLlama {
        qkv_bias: true,
        ..TinyLlama::default()
    };
    let orig = spec.write(&path).unwrap();
    let m = load_model(&path).unwrap();
    // Quantised matrices stay in their blocks: 20 bytes per 32 values for Q4_1, not 128.
    let up = &m.tensors["layers.0.up_proj.weight"];
    assert!(matches!(
        up.data,
        monoscope_formats::HostData::Quantized {
            ty: GgmlType::Q4_1,
            ..
        }
    ));
    assert_eq!(up.byte_len(), 128 * 64 / 32 * 20);

    let c = &m.config;
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.d_ff
        ),
        (2, 64, 4, 2, 16, 128)
    );
    assert_eq!((c.vocab_size, c.max_positions), (3 + 256 + 10, 256));
    assert_eq!(c.rope_layout, RopeLayout::AdjacentPairs);
    assert!(c.tied_embeddings);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    assert_eq!(m.name, "tiny-llama");
    assert_eq!(m.sha256.len(), 64);

    // Exactly the canonical names written, each with its shape.
    let names: Vec<_> = m.tensors.keys().collect();
    assert_eq!(names, orig.keys().collect::<Vec<_>>());
    assert_eq!(m.tensors["layers.1.k_proj.weight"].shape, vec![32, 64]);
    assert_eq!(m.tensors["layers.0.q_proj.bias"].shape, vec![64]);
    assert_eq!(m.tensors["layers.0.down_proj.weight"].shape, vec![64, 128]);
    assert_eq!(m.tensors["embed_tokens"].shape, vec![269, 64]);

    for (name, want) in &orig {
        let got = &m.tensors[name];
        assert_eq!(got.shape, want.shape, "{name}");
        // Weights are uniform in ±0.5: Q8_0 steps are ≤ 0.5/127, Q4_1 steps ≤ 1/15.
        let tol = if got.shape.len() == 1 {
            0.0
        } else if name == "embed_tokens" {
            0.5 / 127.0
        } else {
            0.5 / 15.0 * 1.01
        };
        for (i, (a, b)) in got.to_f32().iter().zip(&want.to_f32()).enumerate() {
            assert!((a - b).abs() <= tol, "{name}[{i}]: {a} vs {b}");
        }
    }

    let t = &m.tokenizer;
    assert_eq!(
        t.encode(" the", false).unwrap(),
        vec![t.token_to_id("Ġthe").unwrap()]
    );
    assert_eq!(
        t.encode(" hello", false).unwrap(),
        vec![t.token_to_id("Ġhello").unwrap()]
    );
    let ids = t.encode("<|im_start|>in the 42\n", true).unwrap();
    assert_eq!(&ids[..3], &[1, 1, t.token_to_id("in").unwrap()]);
    assert_eq!(t.decode(&ids[1..]), "<|im_start|>in the 42\n");
    assert_eq!(
        t.apply_chat_template(&[ChatMessage::new("user", "hi")], true)
            .unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The template's text starts with `<|im_start|>`, which is this model's BOS: encode_chat
    // does not add a second one.
    let msgs = [ChatMessage::new("user", "hi")];
    let chat_ids = t.encode_chat(&msgs, true).unwrap();
    let rendered = t.apply_chat_template(&msgs, true).unwrap();
    assert_eq!(chat_ids, t.encode(&rendered, false).unwrap());
    assert_eq!(chat_ids.iter().take_while(|&&i| i == 1).count(), 1);
}

#[test]
fn untied_f16_model_has_lm_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let spec = TinyLlama {
        tied: false,
        matrix_type: GgmlType::F16,
        embed_type: GgmlType::F32,
        ..TinyLlama::default()
    };
    let orig = spec.write(&path).unwrap();
    let m = load_model(&path).unwrap();
    assert!(!m.config.tied_embeddings);
    assert_eq!(m.tensors["lm_head.weight"], orig["lm_head.weight"]);
    // F16 matrices stay 16-bit (the model widens them as it multiplies).
    assert!(matches!(
        m.tensors["layers.1.up_proj.weight"].data,
        monoscope_formats::HostData::F16(_)
    ));
    let (a, b) = (
        &m.tensors["layers.1.up_proj.weight"].to_f32(),
        &orig["layers.1.up_proj.weight"].to_f32(),
    );
    assert!(
        a.iter()
            .zip(b)
            .all(|(a, b)| (a - b).abs() <= 0.5 * 2f32.powi(-11))
    );
}

#[test]
fn every_metadata_type_round_trips() {
    let values = [
        V::U8(200),
        V::I8(-100),
        V::U16(60000),
        V::I16(-30000),
        V::U32(4_000_000_000),
        V::I32(-2_000_000_000),
        V::F32(1.5),
        V::Bool(true),
        V::String("héllo".into()),
        V::U64(u64::MAX),
        V::I64(i64::MIN),
        V::F64(-2.25e300),
        V::Array(vec![V::I32(1), V::I32(-2)]),
        V::Array(vec![
            V::Array(vec![V::String("a".into())]),
            V::Array(vec![]),
        ]),
    ];
    let mut w = GgufWriter::new();
    for (i, v) in values.iter().enumerate() {
        w.add_metadata(format!("k{i:02}"), v.clone());
    }
    w.add_metadata("general.alignment", V::U32(64));
    w.add_tensor("a", &[3], GgmlType::F32, &[1.0, 2.0, 3.0])
        .unwrap();
    w.add_tensor("b", &[2, 32], GgmlType::Q8_0, &[0.25; 64])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.gguf");
    w.write(&path).unwrap();
    let g = GgufFile::open(&path).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(g.get(&format!("k{i:02}")), Some(v), "k{i:02}");
    }
    assert_eq!(g.data_offset() % 64, 0);
    assert_eq!(
        g.tensor_info("b").unwrap().dims,
        vec![32, 2],
        "GGUF dims are innermost first"
    );
    assert_eq!(g.tensor_f32("a").unwrap().to_f32(), vec![1.0, 2.0, 3.0]);
    assert_eq!(g.tensor_f32("b").unwrap().shape, vec![2, 32]);
    assert!(
        g.tensor_f32("b")
            .unwrap()
            .to_f32()
            .iter()
            .all(|&v| (v - 0.25).abs() < 1e-3)
    );
}

#[test]
fn gpt2_gguf_splits_fused_qkv() {
    use monoscope_formats::testing::{XorShift, tiny_byte_bpe};
    let (d, ff, ctx) = (32usize, 64usize, 16usize);
    let (tokens, types, merges) = tiny_byte_bpe();
    let vocab = tokens.len();
    let mut w = GgufWriter::new();
    let u = |x: usize| V::U32(x as u32);
    w.add_metadata("general.architecture", V::String("gpt2".into()))
        .add_metadata("gpt2.block_count", u(1))
        .add_metadata("gpt2.context_length", u(ctx))
        .add_metadata("gpt2.embedding_length", u(d))
        .add_metadata("gpt2.feed_forward_length", u(ff))
        .add_metadata("gpt2.attention.head_count", u(4))
        .add_metadata("gpt2.attention.layer_norm_epsilon", V::F32(1e-5))
        .add_metadata("tokenizer.ggml.model", V::String("gpt2".into()))
        .add_metadata("tokenizer.ggml.pre", V::String("gpt2".into()))
        .add_metadata(
            "tokenizer.ggml.tokens",
            V::Array(tokens.into_iter().map(V::String).collect()),
        )
        .add_metadata(
            "tokenizer.ggml.token_type",
            V::Array(types.into_iter().map(V::I32).collect()),
        )
        .add_metadata(
            "tokenizer.ggml.merges",
            V::Array(merges.into_iter().map(V::String).collect()),
        );
    let mut rng = XorShift::new(5);
    let mut put = |w: &mut GgufWriter, name: &str, shape: &[usize]| {
        let v = rng.vec(shape.iter().product(), 1.0);
        w.add_tensor(name, shape, GgmlType::F32, &v).unwrap();
        v
    };
    put(&mut w, "token_embd.weight", &[vocab, d]);
    put(&mut w, "position_embd.weight", &[ctx, d]);
    for n in ["attn_norm", "ffn_norm"] {
        put(&mut w, &format!("blk.0.{n}.weight"), &[d]);
        put(&mut w, &format!("blk.0.{n}.bias"), &[d]);
    }
    let qkv = put(&mut w, "blk.0.attn_qkv.weight", &[3 * d, d]);
    let qkv_b = put(&mut w, "blk.0.attn_qkv.bias", &[3 * d]);
    put(&mut w, "blk.0.attn_output.weight", &[d, d]);
    put(&mut w, "blk.0.attn_output.bias", &[d]);
    put(&mut w, "blk.0.ffn_up.weight", &[ff, d]);
    put(&mut w, "blk.0.ffn_up.bias", &[ff]);
    put(&mut w, "blk.0.ffn_down.weight", &[d, ff]);
    put(&mut w, "blk.0.ffn_down.bias", &[d]);
    put(&mut w, "output_norm.weight", &[d]);
    put(&mut w, "output_norm.bias", &[d]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    w.write(&path).unwrap();

    let m = load_model(&path).unwrap();
    assert_eq!(m.config.architecture, monoscope_formats::Architecture::Gpt2);
    assert!(m.config.tied_embeddings);
    for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let t = &m.tensors[&format!("layers.0.{name}.weight")];
        assert_eq!(t.shape, vec![d, d]);
        assert_eq!(t.to_f32()[..], qkv[k * d * d..(k + 1) * d * d]);
        let b = &m.tensors[&format!("layers.0.{name}.bias")];
        assert_eq!(b.to_f32()[..], qkv_b[k * d..(k + 1) * d]);
    }
    assert_eq!(m.tensors["embed_positions"].shape, vec![ctx, d]);
    assert!(m.tensors.contains_key("final_norm.bias"));
    assert!(!m.tensors.contains_key("layers.0.gate_proj.weight"));
}

/// A SentencePiece ("llama") vocabulary: score-ranked merges, `▁` spaces, `<0xNN>` bytes.
#[test]
fn sentencepiece_tokenizer_with_byte_fallback() {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -5.0),
        ("h", -6.0),
        ("e", -6.0),
        ("l", -6.0),
        ("o", -6.0),
        ("▁h", -3.0),
        ("▁he", -3.5),
        ("ll", -2.0),
        ("llo", -2.5),
        ("▁hello", -1.0),
    ];
    for (p, s) in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(s);
    }
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    let (hello, h, c3, a9) = (id("▁hello"), id("▁h"), id("<0xC3>"), id("<0xA9>"));
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", V::String("llama".into()))
        .add_metadata("llama.block_count", V::U32(1))
        .add_metadata("tokenizer.ggml.model", V::String("llama".into()))
        .add_metadata(
            "tokenizer.ggml.tokens",
            V::Array(tokens.iter().cloned().map(V::String).collect()),
        )
        .add_metadata(
            "tokenizer.ggml.token_type",
            V::Array(types.into_iter().map(V::I32).collect()),
        )
        .add_metadata(
            "tokenizer.ggml.scores",
            V::Array(scores.into_iter().map(V::F32).collect()),
        )
        .add_metadata("tokenizer.ggml.bos_token_id", V::U32(1))
        .add_metadata("tokenizer.ggml.eos_token_id", V::U32(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    w.write(&path).unwrap();
    let g = GgufFile::open(&path).unwrap();
    let t = monoscope_formats::gguf_tokenizer::tokenizer_from_gguf(&g).unwrap();
    assert!(t.adds_bos_by_default());
    assert_eq!(
        t.encode("hello hello", true).unwrap(),
        vec![1, hello, hello]
    );
    assert_eq!(t.encode("hé", false).unwrap(), vec![h, c3, a9]);
    assert_eq!(t.decode(&[h, c3, a9, hello]), "hé hello");
    assert_eq!(t.decode(&[1, hello]), "<s> hello");
}
