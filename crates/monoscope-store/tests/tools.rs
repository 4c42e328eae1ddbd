//! The functions behind `monoscope store info | verify | export`.

mod common;

use common::{HOOK, value, write_store};
use monoscope_store::{Dtype, export, info, verify};
use safetensors::SafeTensors;

fn store(dtype: Dtype) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_store(
        dir.path(),
        &common::spec(&[HOOK], 5, dtype, 40),
        0,
        &[60, 60],
    );
    dir
}

#[test]
fn info_summarises_the_manifest() {
    let dir = store(Dtype::F16);
    let info = info(dir.path()).unwrap();
    assert_eq!((info.rows, info.shards, info.d_model), (120, 3, 5));
    let text = info.to_string();
    for want in [
        "model           test-model",
        "hooks           blocks.0.hook_resid_post",
        "dtype           f16",
        "rows (tokens)   120 in 3 shards",
        "metadata        {\"corpus\":\"test\"}",
    ] {
        assert!(text.contains(want), "`{want}` not in\n{text}");
    }
    assert!(
        info.compression_ratio() > 1.0,
        "{}",
        info.compression_ratio()
    );
}

#[test]
fn verify_reports_what_it_checked() {
    let dir = store(Dtype::Bf16);
    let report = verify(dir.path()).unwrap();
    assert_eq!((report.shards, report.rows), (3, 120));
    assert!(
        report.to_string().contains("all 3 shards (120 rows"),
        "{report}"
    );
}

#[test]
fn npy_export_has_a_numpy_header_and_the_rows() {
    let dir = store(Dtype::F32);
    let out = dir.path().join("x.npy");
    export(dir.path(), HOOK, 30..95, &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert_eq!(
        header.trim_end(),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (65, 5), }"
    );
    assert!(header.ends_with('\n'));
    let values: Vec<f32> = bytes[10 + header_len..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = (30..95)
        .flat_map(|r| (0..5).map(move |j| value(r, 0, j)))
        .collect();
    assert_eq!(values, want);
}

#[test]
fn safetensors_export_holds_activations_and_ids() {
    let dir = store(Dtype::F32);
    let out = dir.path().join("x.safetensors");
    export(dir.path(), HOOK, 100..120, &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let acts = st.tensor(HOOK).unwrap();
    assert_eq!(acts.shape(), [20, 5]);
    assert_eq!(acts.dtype(), safetensors::Dtype::F32);
    let first = f32::from_le_bytes(acts.data()[..4].try_into().unwrap());
    assert_eq!(first, value(100, 0, 0));
    let tokens = st.tensor("token_ids").unwrap();
    let ids: Vec<u32> = tokens
        .data()
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ids, (100..120).collect::<Vec<u32>>());
}

#[test]
fn export_refuses_unknown_extensions_hooks_and_ranges() {
    let dir = store(Dtype::F32);
    let msg = export(dir.path(), HOOK, 0..10, &dir.path().join("x.csv"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unknown extension `.csv` (use .npy or .safetensors)"),
        "{msg}"
    );
    let msg = export(dir.path(), "nope", 0..10, &dir.path().join("x.npy"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown hook `nope`"), "{msg}");
    let msg = export(dir.path(), HOOK, 0..500, &dir.path().join("x.npy"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("rows 0..500 are out of range"), "{msg}");
    assert!(!dir.path().join("x.npy").exists());
}
