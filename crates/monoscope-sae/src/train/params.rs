//! The trainable tensors in the trainer's layout. Both weight matrices are `[d_sae, d_in]` so
//! that a latent's encoder and decoder vectors are contiguous rows: the sparse kernels touch
//! whole rows of the latents that fired. Export transposes the encoder to SAELens's
//! `W_enc [d_in, d_sae]`.

/// Parameters, their gradients, or one of Adam's moment buffers (same shapes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Params {
    /// `W_enc` transposed: `[d_sae, d_in]`.
    pub w_enc_t: Vec<f32>,
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_in]`
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
    /// `[d_sae]` for JumpReLU, empty otherwise.
    pub threshold: Vec<f32>,
}

/// Tensor names, in `Params::tensors` order (also the checkpoint keys).
pub(crate) const NAMES: [&str; 5] = ["w_enc_t", "b_enc", "w_dec", "b_dec", "threshold"];

impl Params {
    pub(crate) fn zeros(d_in: usize, d_sae: usize, threshold: bool) -> Self {
        Params {
            w_enc_t: vec![0.0; d_sae * d_in],
            b_enc: vec![0.0; d_sae],
            w_dec: vec![0.0; d_sae * d_in],
            b_dec: vec![0.0; d_in],
            threshold: if threshold {
                vec![0.0; d_sae]
            } else {
                Vec::new()
            },
        }
    }

    /// No tensors at all: the state of an optimizer that does not use this buffer.
    pub(crate) fn empty() -> Self {
        Params {
            w_enc_t: Vec::new(),
            b_enc: Vec::new(),
            w_dec: Vec::new(),
            b_dec: Vec::new(),
            threshold: Vec::new(),
        }
    }

    pub(crate) fn tensors(&self) -> [&Vec<f32>; 5] {
        [
            &self.w_enc_t,
            &self.b_enc,
            &self.w_dec,
            &self.b_dec,
            &self.threshold,
        ]
    }

    pub(crate) fn tensors_mut(&mut self) -> [&mut Vec<f32>; 5] {
        [
            &mut self.w_enc_t,
            &mut self.b_enc,
            &mut self.w_dec,
            &mut self.b_dec,
            &mut self.threshold,
        ]
    }
}
