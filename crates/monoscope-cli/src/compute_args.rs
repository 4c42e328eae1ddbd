//! `--device` and `--precision`: where the commands that load a model outside a pipeline run
//! it (`monoscope model run|generate|perplexity`, `features`, `steer`, `attribute`).

use std::path::Path;

use anyhow::Context;
use monoscope_device::DeviceSpec;
use monoscope_lm::{MatmulKind, Model, ModelSpec, Precision};

#[derive(Debug, Clone, clap::Args)]
pub struct ComputeArgs {
    /// The device the model runs on: `cpu`, `cuda`, `cuda:N`, `wgpu`, … (`monoscope devices`
    /// lists this build's).
    #[arg(long, env = "MONOSCOPE_DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
    /// The float type of the model's weights and products on a GPU device: `f32`, `f16` or
    /// `bf16` (the CPU runs `f32`).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl ComputeArgs {
    /// The CPU in f32: for commands that only read a model's configuration.
    pub fn cpu() -> Self {
        Self {
            device: DeviceSpec::Cpu,
            precision: Precision::F32,
        }
    }

    /// The model at `path` on this device, its linear layers in `matmul`.
    pub fn load(&self, path: &Path, matmul: MatmulKind) -> anyhow::Result<Model> {
        let device = monoscope_device::open(self.device)
            .with_context(|| format!("--device {} (or MONOSCOPE_DEVICE)", self.device))?;
        ModelSpec::new(path)
            .with_matmul(matmul)
            .with_precision(self.precision)
            .with_device(device)
            .load()
            .with_context(|| format!("loading {}", path.display()))
    }
}
