//! Compute devices for monoscope's stages.
//!
//! - [`DeviceSpec`] (from `monoscope-core`): the `device` setting's value.
//! - [`compiled`]: the backends this build has (cargo features `cuda`, `rocm`, `wgpu`,
//!   `vulkan`, `metal`; `cpu` always).
//! - [`open`]: the burn [`Device`] for a spec, after checking that the build has its backend
//!   and that the device answers (a tiny computation read back); [`DeviceError`] otherwise.
//! - [`BACKENDS`]: every backend monoscope knows, with the device it tries for each.
//! - [`survey`]: every backend of this build and whether its device is present, for
//!   `monoscope devices`.
//! - [`catch_backend_panic`]: runs a computation on a device with a backend's panic turned
//!   into an error message (backends report a missing driver, adapter or kernel by panicking).
//! - [`check_half_product`]: whether a device multiplies matrices in a 16-bit float type
//!   (wgpu has no bf16), asked of it before a model or a trainer relies on it.
//! - [`test_device`]: the device the device tests run on (`MONOSCOPE_TEST_DEVICE`, default
//!   `cpu`), so that one test suite checks burn's CPU backend here and a GPU backend in CI or on
//!   a GPU machine.
//!
//! `cpu` is burn's `flex` backend: the stages' host kernels (the SAE trainer on `gemm`, the
//! model's fused CPU kernels) run there; any other device runs burn's ops.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

pub use burn::prelude::Device;
use burn::prelude::{Tensor, TensorData};
use burn::tensor::FloatDType;
pub use monoscope_core::DeviceSpec;

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "device `{spec}`: this build has no `{backend}` backend (built with: {built}); rebuild \
         with `--features {backend}`"
    )]
    NotCompiled {
        spec: DeviceSpec,
        backend: &'static str,
        built: String,
    },
    #[error("device `{spec}` is not present on this machine: {reason}")]
    Absent { spec: DeviceSpec, reason: String },
}

/// The backends compiled into this build, `cpu` first.
pub fn compiled() -> Vec<&'static str> {
    let mut backends = vec!["cpu"];
    if cfg!(feature = "cuda") {
        backends.push("cuda");
    }
    if cfg!(feature = "rocm") {
        backends.push("rocm");
    }
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    if cfg!(feature = "vulkan") {
        backends.push("vulkan");
    }
    if cfg!(feature = "metal") {
        backends.push("metal");
    }
    backends
}

/// The burn device for `spec` without checking that it answers (`None`: not compiled in).
fn device_of(spec: DeviceSpec) -> Option<Device> {
    match spec {
        DeviceSpec::Cpu => Some(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => Some(Device::cuda(index)),
        #[cfg(feature = "rocm")]
        DeviceSpec::Rocm(index) => Some(Device::rocm(index)),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(index) => Some(Device::wgpu(match index {
            None => burn::tensor::DeviceKind::DefaultDevice,
            Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
        })),
        #[cfg(feature = "vulkan")]
        DeviceSpec::Vulkan => Some(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "metal")]
        DeviceSpec::Metal => Some(Device::metal(burn::tensor::DeviceKind::DefaultDevice)),
        #[allow(unreachable_patterns)] // every backend may be compiled in
        _ => None,
    }
}

/// Probes already made: a device that answered once is not probed again, and one that failed
/// keeps its reason (a backend's runtime may not survive a second failed start).
static PROBED: Mutex<Vec<(DeviceSpec, Result<(), String>)>> = Mutex::new(Vec::new());

/// The burn device for `spec`, checked: the build has its backend, and a small computation on
/// it comes back right.
pub fn open(spec: DeviceSpec) -> Result<Device, DeviceError> {
    let device = device_of(spec).ok_or_else(|| DeviceError::NotCompiled {
        spec,
        backend: spec.backend(),
        built: compiled().join(", "),
    })?;
    let mut probed = PROBED.lock().unwrap_or_else(|e| e.into_inner());
    let answer = match probed.iter().find(|(s, _)| *s == spec) {
        Some((_, answer)) => answer.clone(),
        None => {
            let answer = probe(&device);
            probed.push((spec, answer.clone()));
            answer
        }
    };
    answer
        .map(|()| device)
        .map_err(|reason| DeviceError::Absent { spec, reason })
}

/// `[1, 2, 3] * 2 + 1` on the device, read back. Backends report a missing driver or adapter
/// by panicking when their runtime starts, so the panic becomes the reason.
fn probe(device: &Device) -> Result<(), String> {
    let values = catch_backend_panic("its runtime failed to start", || {
        let x = Tensor::<1>::from_data(TensorData::from([1.0f32, 2.0, 3.0]), device);
        let y = (x * 2.0 + 1.0).into_data().convert::<f32>();
        y.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
    })?;
    if values == [3.0, 5.0, 7.0] {
        Ok(())
    } else {
        Err(format!("a test computation came back wrong: {values:?}"))
    }
}

/// Runs `computation` (work on a device, read back) and returns its result, or the message of
/// the panic it raised (`otherwise` when the panic carries no text). The process's panic hook
/// is silenced meanwhile: the backend's panic is an answer here, not a crash to print.
pub fn catch_backend_panic<T>(
    otherwise: &str,
    computation: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(computation));
    std::panic::set_hook(previous);
    match outcome {
        Ok(answer) => answer,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| otherwise.to_string())),
    }
}

/// Whether `device` runs a matrix product in the 16-bit `dtype` (`F16` or `BF16`): a 2×2
/// product with both operands in it, widened to f32 and read back. A backend without the
/// type's product panics inside the launch; the panic's first line is the reason.
pub fn check_half_product(device: &Device, dtype: FloatDType) -> Result<(), String> {
    let values = catch_backend_panic("the product failed", || {
        let a = Tensor::<2>::from_data(TensorData::from([[1.0f32, 2.0], [3.0, 4.0]]), device)
            .cast(dtype);
        a.clone()
            .matmul(a)
            .cast(FloatDType::F32)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))
    })
    .map_err(|why| {
        // Backends' messages run to many lines, often after the `unwrap` that raised them.
        let first = why.lines().next().unwrap_or_default();
        first
            .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
            .unwrap_or(first)
            .to_string()
    })?;
    if values == [7.0, 10.0, 15.0, 22.0] {
        Ok(())
    } else {
        Err(format!("a test product came back wrong: {values:?}"))
    }
}

/// One line of [`survey`]: a backend of this build, the device tried for it and the outcome.
#[derive(Debug, Clone)]
pub struct Surveyed {
    pub spec: DeviceSpec,
    pub outcome: Result<(), DeviceError>,
}

/// Every backend monoscope knows, each with the device tried for it (the first of its kind),
/// in the order listed.
pub const BACKENDS: [DeviceSpec; 6] = [
    DeviceSpec::Cpu,
    DeviceSpec::Cuda(0),
    DeviceSpec::Rocm(0),
    DeviceSpec::Wgpu(None),
    DeviceSpec::Vulkan,
    DeviceSpec::Metal,
];

/// Every backend of this build with its default device, probed.
pub fn survey() -> Vec<Surveyed> {
    BACKENDS
        .into_iter()
        .filter(|spec| compiled().contains(&spec.backend()))
        .map(|spec| Surveyed {
            spec,
            outcome: open(spec).map(drop),
        })
        .collect()
}

/// The environment variable naming the device of the device tests.
pub const TEST_DEVICE_ENV: &str = "MONOSCOPE_TEST_DEVICE";

/// The device the device tests run on: `MONOSCOPE_TEST_DEVICE` (default `cpu`). Panics with
/// the reason when it is not a device or cannot be opened: a test run that asked for a device
/// must not quietly pass on another.
pub fn test_device() -> (DeviceSpec, Device) {
    let spec = match std::env::var(TEST_DEVICE_ENV) {
        Ok(name) if !name.is_empty() => name
            .parse::<DeviceSpec>()
            .unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}: {e}")),
        _ => DeviceSpec::Cpu,
    };
    let device = open(spec).unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}: {e}"));
    (spec, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_there() {
        assert_eq!(compiled()[0], "cpu");
        open(DeviceSpec::Cpu).unwrap();
        assert!(survey()[0].outcome.is_ok());
    }

    #[test]
    fn a_backend_panic_becomes_its_message() {
        let text: Result<(), String> =
            catch_backend_panic("no text", || panic!("no adapter {}", 0));
        assert_eq!(text.unwrap_err(), "no adapter 0");
        let silent: Result<(), String> =
            catch_backend_panic("no text", || std::panic::panic_any(7u8));
        assert_eq!(silent.unwrap_err(), "no text");
        assert_eq!(catch_backend_panic("no text", || Ok(3)), Ok(3));
    }

    #[test]
    fn the_cpu_backend_has_16_bit_products() {
        for dtype in [FloatDType::F16, FloatDType::BF16] {
            check_half_product(&Device::flex(), dtype).unwrap();
        }
    }

    #[test]
    fn every_backend_is_known() {
        let known: Vec<&str> = BACKENDS.iter().map(|spec| spec.backend()).collect();
        for backend in compiled() {
            assert!(known.contains(&backend), "{backend} is not in BACKENDS");
        }
    }

    #[test]
    fn a_backend_not_compiled_in_is_named() {
        if cfg!(feature = "metal") {
            return;
        }
        let err = open(DeviceSpec::Metal).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`metal`") && text.contains("--features metal"),
            "{text}"
        );
    }
}
