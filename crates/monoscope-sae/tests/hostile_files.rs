//! SAE files whose sizes no bytes back, or whose values break the SAE, are refused with an error
//! naming the file before anything is computed or allocated from them. Each test is a crafted
//! file that made a loader panic on an overflow, reserve what the file claimed, or report a
//! problem without saying which file it came from.

use std::path::Path;

use monoscope_sae::format::write_npz;
use monoscope_sae::{Architecture, Sae, load_sae, read_sae_info, save_saelens};
use serde_json::{Value, json};

fn small_sae(architecture: Architecture) -> Sae {
    let (d_in, d_sae) = (4, 6);
    Sae {
        d_in,
        d_sae,
        architecture,
        w_enc: vec![0.5; d_in * d_sae],
        b_enc: vec![0.0; d_sae],
        w_dec: vec![0.25; d_sae * d_in],
        b_dec: vec![0.0; d_in],
        threshold: None,
        apply_b_dec_to_input: true,
        metadata: Default::default(),
        extra_cfg: Default::default(),
    }
}

fn edit_cfg(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("cfg.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` not in: {msg}");
    }
}

/// Regression: `d_sae` was taken from `cfg.json` as it stood, so an SAE's summary could claim
/// a trillion features over a file of a few hundred bytes, and readers of the summary sized
/// their tables by it.
#[test]
fn sizes_the_weights_cannot_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sae_dir = dir.path().join("sae");
    save_saelens(&small_sae(Architecture::Relu), &sae_dir).unwrap();
    edit_cfg(&sae_dir, |c| c["d_sae"] = 1_000_000_000_000u64.into());
    let cfg = sae_dir.join("cfg.json").display().to_string();
    for msg in [
        read_sae_info(&sae_dir).unwrap_err().to_string(),
        load_sae(&sae_dir).unwrap_err().to_string(),
    ] {
        assert_contains(
            &msg,
            &[
                &format!("{cfg}: `d_sae` = 1000000000000 is not supported"),
                "with d_in = 4, the weights need more than the",
            ],
        );
    }
    // A summary without weights is held to sizes that feature ids can take.
    std::fs::remove_file(sae_dir.join("sae_weights.safetensors")).unwrap();
    let msg = read_sae_info(&sae_dir).unwrap_err().to_string();
    assert_contains(&msg, &[&cfg, "must fit in a u32"]);
    edit_cfg(&sae_dir, |c| c["d_sae"] = 6.into());
    assert_eq!(read_sae_info(&sae_dir).unwrap().d_sae, 6);
}

/// Regression: what `Sae::validate` found wrong with a loaded SAE (here TopK's `k` of 0) was
/// reported without the file it came from.
#[test]
fn a_bad_value_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&small_sae(Architecture::TopK { k: 2 }), dir.path()).unwrap();
    edit_cfg(dir.path(), |c| c["k"] = 0.into());
    let msg = load_sae(dir.path()).unwrap_err().to_string();
    let cfg = dir.path().join("cfg.json").display().to_string();
    assert_contains(
        &msg,
        &[&format!(
            "{cfg}: `k` = 0 is not supported: must be in 1..=6"
        )],
    );
}

/// Regression: a sparsify `d_in` × `expansion_factor` was multiplied unchecked (a panic).
#[test]
fn sparsify_sizes_that_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({"d_in": 1u64 << 62, "k": 1, "expansion_factor": 8});
    std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
    std::fs::write(dir.path().join("sae.safetensors"), b"").unwrap();
    let msg = load_sae(dir.path()).unwrap_err().to_string();
    assert_contains(
        &msg,
        &[
            "cfg.json: `expansion_factor` = 8 is not supported",
            "d_in 4611686018427387904 × 8 latents overflows",
        ],
    );
}

/// Regression: the size an `.npz` member claims in the archive's directory was reserved as it
/// stood, before a byte was read.
#[test]
fn an_npz_member_claiming_more_than_the_archive_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("params.npz");
    let (d_in, d_sae) = (2, 3);
    let w = vec![0.5f32; d_in * d_sae];
    let (b_in, b_sae) = (vec![0.0f32; d_in], vec![0.1f32; d_sae]);
    write_npz(
        &path,
        &[
            ("W_enc", &[d_in, d_sae], &w),
            ("W_dec", &[d_sae, d_in], &w),
            ("b_enc", &[d_sae], &b_sae),
            ("b_dec", &[d_in], &b_in),
            ("threshold", &[d_sae], &b_sae),
        ],
    )
    .unwrap();
    load_sae(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // The central directory entry of the first member: its uncompressed size is at offset 24.
    let entry = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[entry + 24..entry + 28].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let msg = load_sae(&path).unwrap_err().to_string();
    assert_contains(
        &msg,
        &[
            &path.display().to_string(),
            "W_enc.npy",
            "claims 4294967280 bytes from",
        ],
    );
}
