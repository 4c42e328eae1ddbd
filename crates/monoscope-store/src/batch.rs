//! What the batch readers hand out.

/// One batch of rows for one hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub d_model: usize,
    /// Row-major `[rows, d_model]`, dequantised to f32.
    pub activations: Vec<f32>,
    /// The token id of each row, when asked for.
    pub token_ids: Option<Vec<u32>>,
}
