//! The trainer's compute engine: where the parameters, the optimizer state and the gradients
//! live, and the operations of a step on them. The trainer keeps everything else (schedules,
//! dead latents, metrics, checkpoints' metadata) and calls these in the same order for both.

use std::borrow::Cow;

use rayon::prelude::*;

use super::adam::adam_update;
use super::config::{AdamConfig, TrainConfig};
use super::device::DeviceState;
use super::grad::{BatchStats, Scratch, loss_and_grads};
use super::params::Params;
use super::signum::signum_update;
use crate::SaeError;
use crate::kernels::{axpy, dot, sum_sq};

#[derive(Debug)]
pub(super) enum Engine {
    Host(Box<HostState>),
    Device(Box<DeviceState>),
}

/// The host engine's tensors.
#[derive(Debug)]
pub(super) struct HostState {
    /// The parameters; with the schedule-free optimizer, the point `y` its gradients are
    /// taken at.
    pub p: Params,
    /// Adam's first moment, or the schedule-free base iterate `z`.
    pub m: Params,
    /// Adam's second moment (empty tensors with the schedule-free optimizer).
    pub v: Params,
    /// Gradient scratch (not state: overwritten by every step).
    pub g: Params,
    /// Working buffers of the forward and backward passes (not state either).
    pub scratch: Scratch,
}

/// The parameters and both optimizer buffers, in host memory (checkpoints and export).
pub(super) struct HostView<'a> {
    pub p: Cow<'a, Params>,
    pub m: Cow<'a, Params>,
    pub v: Cow<'a, Params>,
}

impl Engine {
    /// Sets the decoder bias (its mean initialisation on the first batch).
    pub(super) fn set_b_dec(&mut self, b_dec: &[f32]) {
        match self {
            Engine::Host(h) => h.p.b_dec.copy_from_slice(b_dec),
            Engine::Device(dev) => dev.set_b_dec(b_dec),
        }
    }

    /// Starts the schedule-free base iterate where the parameters are (x = y = z).
    pub(super) fn start_schedule_free(&mut self) {
        match self {
            Engine::Host(h) => h.m = h.p.clone(),
            Engine::Device(dev) => dev.start_schedule_free(),
        }
    }

    /// Loss and statistics of batch `x` (normalised), with every gradient computed.
    pub(super) fn loss_and_grads(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        coeff: f32,
        dead: Option<&[bool]>,
    ) -> Result<BatchStats, SaeError> {
        match self {
            Engine::Host(h) => Ok(loss_and_grads(
                &h.p,
                cfg,
                x,
                coeff,
                dead,
                &mut h.g,
                &mut h.scratch,
            )),
            Engine::Device(dev) => dev.loss_and_grads(cfg, x, coeff, dead),
        }
    }

    /// Projects the decoder gradient onto the unit rows' tangent space when `unit`, and
    /// returns the global gradient norm. The device engine did both with the gradients (it
    /// reads the norm back with the statistics, in one transfer).
    pub(super) fn finish_grads(&mut self, unit: bool, d: usize) -> f64 {
        let h = match self {
            Engine::Host(h) => h,
            Engine::Device(dev) => return dev.grad_norm(),
        };
        if unit {
            // Only the component orthogonal to each (unit) decoder row changes its direction.
            h.g.w_dec
                .par_chunks_mut(d)
                .zip(h.p.w_dec.par_chunks(d))
                .for_each(|(g, w)| {
                    let along = dot(g, w);
                    axpy(g, -along, w);
                });
        }
        h.g.tensors().iter().map(|t| sum_sq(t)).sum::<f64>().sqrt()
    }

    /// One Adam step at step `t` (1-based) with the gradients scaled by `clip`.
    pub(super) fn adam(&mut self, lr: f32, adam: &AdamConfig, t: u64, clip: f32) {
        match self {
            Engine::Host(h) => {
                let (p, g, m, v) = (
                    h.p.tensors_mut(),
                    h.g.tensors(),
                    h.m.tensors_mut(),
                    h.v.tensors_mut(),
                );
                for (((p, g), m), v) in p.into_iter().zip(g).zip(m).zip(v) {
                    adam_update(p, g, m, v, lr, adam, t, clip);
                }
            }
            Engine::Device(dev) => dev.adam(lr, adam, t, clip),
        }
    }

    /// One schedule-free sign-descent step (`c`: this step's averaging weight).
    pub(super) fn signum(&mut self, lr: f32, beta: f32, c: f32) {
        match self {
            Engine::Host(h) => {
                let (p, g, z) = (h.p.tensors_mut(), h.g.tensors(), h.m.tensors_mut());
                for ((p, g), z) in p.into_iter().zip(g).zip(z) {
                    signum_update(p, g, z, lr, beta, c);
                }
            }
            Engine::Device(dev) => dev.signum(lr, beta, c),
        }
    }

    /// Brings every decoder row back to unit norm.
    pub(super) fn normalize_decoder(&mut self, d: usize) {
        match self {
            Engine::Host(h) => h.p.w_dec.par_chunks_mut(d).for_each(|w| {
                let n = dot(w, w).sqrt().max(f32::EPSILON);
                w.iter_mut().for_each(|v| *v /= n);
            }),
            Engine::Device(dev) => dev.normalize_decoder(),
        }
    }

    /// The parameters and optimizer buffers in host memory: borrowed from the host engine,
    /// read back from a device.
    pub(super) fn view(&self) -> Result<HostView<'_>, SaeError> {
        match self {
            Engine::Host(h) => Ok(HostView {
                p: Cow::Borrowed(&h.p),
                m: Cow::Borrowed(&h.m),
                v: Cow::Borrowed(&h.v),
            }),
            Engine::Device(dev) => {
                let (p, m, v) = dev.download()?;
                Ok(HostView {
                    p: Cow::Owned(p),
                    m: Cow::Owned(m),
                    v: Cow::Owned(v),
                })
            }
        }
    }

    /// Only the parameters in host memory (export with Adam needs no more).
    pub(super) fn params(&self) -> Result<Cow<'_, Params>, SaeError> {
        match self {
            Engine::Host(h) => Ok(Cow::Borrowed(&h.p)),
            Engine::Device(dev) => dev.download_params().map(Cow::Owned),
        }
    }
}
