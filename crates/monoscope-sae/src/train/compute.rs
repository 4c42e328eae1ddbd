//! Where a trainer computes: the host's hand-written kernels, or burn tensors on a device.

use burn::prelude::Device;
use burn::tensor::FloatDType;

use crate::SaeError;

/// Where a [`crate::Trainer`] runs its forward and backward passes and its optimizer.
///
/// Both run the same algorithms from the same initial weights (initialisation is always on the
/// host); the bookkeeping (input scaling, massive rows, schedules, dead latents, metrics,
/// checkpoints) is shared, so a checkpoint written by either resumes in the other.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Compute {
    /// The hand-written `gemm` kernels on this machine's CPU (rayon's current pool).
    #[default]
    Host,
    /// burn tensors on this device: parameters, optimizer state and gradients stay there, and
    /// each step uploads the batch and reads back only the small statistics the bookkeeping
    /// needs.
    Burn(Device),
    /// As [`Compute::Burn`], with the batch's matrix products in a 16-bit type
    /// (`FloatDType::F16` or `FloatDType::BF16`): operands narrowed on the way in, results
    /// widened to f32 on the way out; parameters, optimizer state and statistics stay f32.
    /// Made by [`Compute::for_device_with_products`], which checks the device has the product.
    BurnHalf(Device, FloatDType),
}

impl Compute {
    /// The compute for a `device` setting: burn's CPU backend (`flex`) keeps the host kernels,
    /// which are faster on a CPU than burn's general ops (the sparse path touches only the
    /// active latents); any other device runs burn's ops.
    pub fn for_device(device: &Device) -> Compute {
        if *device == Device::flex() {
            Compute::Host
        } else {
            Compute::Burn(device.clone())
        }
    }

    /// As [`Compute::for_device`], with the burn trainer's matrix products in `products`
    /// (`None`: f32). Refused: 16-bit products on burn's CPU device, where the host kernels
    /// train (in f32), and a type whose matrix product the device lacks (wgpu has no bf16),
    /// found by running a small product in it.
    pub fn for_device_with_products(
        device: &Device,
        products: Option<FloatDType>,
    ) -> Result<Compute, SaeError> {
        let Some(dtype) = products else {
            return Ok(Compute::for_device(device));
        };
        if !matches!(dtype, FloatDType::F16 | FloatDType::BF16) {
            return Err(SaeError::Device(format!(
                "{dtype:?} is not a 16-bit product type (f16 or bf16)"
            )));
        }
        if *device == Device::flex() {
            return Err(SaeError::Device(
                "16-bit products are for GPU devices; the CPU trains with its f32 host kernels"
                    .into(),
            ));
        }
        monoscope_device::check_half_product(device, dtype).map_err(|why| {
            SaeError::Device(format!(
                "this device has no {dtype:?} matrix product ({why})"
            ))
        })?;
        Ok(Compute::BurnHalf(device.clone(), dtype))
    }

    pub fn is_host(&self) -> bool {
        matches!(self, Compute::Host)
    }
}
