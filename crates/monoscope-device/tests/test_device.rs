//! The operations the device paths rest on, on the test device (`MONOSCOPE_TEST_DEVICE`;
//! CI sets it to a software Vulkan GPU) against burn's CPU backend: a matrix product, TopK with
//! indices, scatter, and a backward pass.

use burn::prelude::{Tensor, TensorData};
use monoscope_device::{Device, test_device};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Deterministic values in [-1, 1).
fn filled(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn matrix(rows: usize, cols: usize, seed: u32, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(filled(rows * cols, seed), [rows, cols]),
        device,
    )
}

#[test]
fn a_matrix_product_agrees_with_the_cpu() {
    let (spec, device) = test_device();
    let cpu = Device::flex();
    let (m, k, n) = (67, 300, 129);
    let on_device = values(matrix(m, k, 1, &device).matmul(matrix(k, n, 2, &device)));
    let on_cpu = values(matrix(m, k, 1, &cpu).matmul(matrix(k, n, 2, &cpu)));
    let scale = on_cpu.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let worst = on_device
        .iter()
        .zip(&on_cpu)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1.5e-5,
        "{spec}: max difference {worst} of the largest value"
    );
}

#[test]
fn topk_with_indices_and_scatter_agree_with_the_cpu() {
    let (spec, device) = test_device();
    let x = |d: &Device| matrix(8, 512, 3, d);
    let (top, idx) = x(&device).topk_with_indices(16, 1);
    let (top_cpu, idx_cpu) = x(&Device::flex()).topk_with_indices(16, 1);
    assert_eq!(values(top.clone()), values(top_cpu), "{spec}");
    let idx_values: Vec<i64> = idx
        .clone()
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    let idx_cpu: Vec<i64> = idx_cpu.into_data().convert::<i64>().try_to_vec().unwrap();
    assert_eq!(idx_values, idx_cpu, "{spec}");
    // A dense code from the selected entries, as the device trainer builds it.
    let dense = Tensor::<2>::zeros([8, 512], &device).scatter(
        1,
        idx,
        top,
        burn::tensor::IndexingUpdateOp::Add,
    );
    let dense = values(dense);
    assert_eq!(
        dense.iter().filter(|v| **v != 0.0).count(),
        8 * 16,
        "{spec}"
    );
}

#[test]
fn a_backward_pass_gives_the_gradient() {
    let (spec, device) = test_device();
    let device = device.autodiff();
    let x = matrix(4, 32, 4, &device).require_grad();
    let w = matrix(32, 8, 5, &device);
    // d/dx sum((x w)²) = 2 (x w) wᵀ
    let y = x.clone().matmul(w.clone());
    let loss = (y.clone() * y.clone()).sum();
    let grads = loss.backward();
    let got = values(x.grad(&grads).expect("x's gradient"));
    let expected = values((y * 2.0).matmul(w.transpose()).detach());
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() <= 1e-4 * e.abs().max(1.0),
            "{spec}: {g} vs {e}"
        );
    }
}

#[test]
fn the_test_device_is_listed_as_available() {
    let (spec, _) = test_device();
    let listed = monoscope_device::survey();
    let found = listed.iter().find(|s| s.spec == spec);
    assert!(
        found.is_some_and(|s| s.outcome.is_ok()),
        "{spec} in the survey: {listed:?}"
    );
}
