//! Where a trainer computes: the host's hand-written kernels, or burn tensors on a device.

use burn::prelude::Device;

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

    pub fn is_host(&self) -> bool {
        matches!(self, Compute::Host)
    }
}
