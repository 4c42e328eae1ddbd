//! Dequantisation of Q5_0, Q5_1, Q2_K, Q3_K, IQ4_NL and IQ4_XS against gguf-py (llama.cpp's own
//! numpy implementation): random blocks with finite f16 scales, dequantised by
//! `gguf.quants.dequantize` into `tests/fixtures/quant/<TYPE>.{bin,f32}` by
//! `tests/fixtures/make_quant_fixtures.py`. Both sides form each value with the same f32
//! operations in the same order (`d * q`, `d * q + m`, `(d * sc) * q - dmin * m`), so the values
//! must agree bit for bit.

use std::path::Path;

use monoscope_formats::quant::{GgmlType, dequantize};
use monoscope_formats::{GgufFile, GgufWriter};

const TYPES: [GgmlType; 6] = [
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's block bytes and gguf-py's values for them.
fn load(ty: GgmlType) -> (Vec<u8>, Vec<f32>) {
    let bytes = fixture(&format!("{}.bin", ty.name()));
    let want = fixture(&format!("{}.f32", ty.name()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (bytes, want)
}

fn assert_bits_eq(ty: GgmlType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{}", ty.name());
    let bad: Vec<_> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
        .collect();
    assert!(
        bad.is_empty(),
        "{}: {} of {} values differ from gguf-py, first (index, (ours, gguf-py)): {:?}",
        ty.name(),
        bad.len(),
        got.len(),
        &bad[..bad.len().min(8)]
    );
}

fn check(ty: GgmlType) {
    let (bytes, want) = load(ty);
    assert_eq!(
        bytes.len() % ty.block_bytes(),
        0,
        "{}: partial block",
        ty.name()
    );
    let n_blocks = bytes.len() / ty.block_bytes();
    assert!(n_blocks >= 3, "{}: only {n_blocks} blocks", ty.name());
    assert_eq!(want.len(), n_blocks * ty.block_len(), "{}", ty.name());
    // The fixtures must exercise the decoder: finite, and not all one value.
    assert!(want.iter().all(|v| v.is_finite()), "{}", ty.name());
    assert!(want.iter().any(|&v| v != want[0]), "{}", ty.name());

    let mut got = vec![f32::NAN; want.len()];
    dequantize(ty, &bytes, &mut got);
    assert_bits_eq(ty, &got, &want);
}

#[test]
fn q5_0_matches_gguf_py() {
    check(GgmlType::Q5_0);
}

#[test]
fn q5_1_matches_gguf_py() {
    check(GgmlType::Q5_1);
}

#[test]
fn q2_k_matches_gguf_py() {
    check(GgmlType::Q2K);
}

#[test]
fn q3_k_matches_gguf_py() {
    check(GgmlType::Q3K);
}

#[test]
fn iq4_nl_matches_gguf_py() {
    check(GgmlType::IQ4NL);
}

#[test]
fn iq4_xs_matches_gguf_py() {
    check(GgmlType::IQ4XS);
}

/// The same blocks as tensors of a GGUF file: the reader accepts each type id, sizes the data by
/// the type's block layout, and `tensor_f32` gives gguf-py's values.
#[test]
fn gguf_file_reads_every_new_type() {
    let mut w = GgufWriter::new();
    for ty in TYPES {
        let (bytes, _) = load(ty);
        let rows = bytes.len() / ty.block_bytes();
        w.add_raw_tensor(ty.name(), &[rows, ty.block_len()], ty.id(), bytes);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quants.gguf");
    w.write(&path).unwrap();
    let g = GgufFile::open(&path).unwrap();
    for ty in TYPES {
        let (bytes, want) = load(ty);
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        assert_eq!(g.tensor_info(ty.name()).unwrap().ggml_type, ty);
        assert_eq!(g.tensor_bytes(ty.name()).unwrap(), &bytes[..]);
        let t = g.tensor_f32(ty.name()).unwrap();
        assert_eq!(t.shape, vec![want.len() / ty.block_len(), ty.block_len()]);
        assert_bits_eq(ty, &t.to_f32(), &want);
    }
}
