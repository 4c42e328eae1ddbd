//! A batch of token sequences with an optional padding mask.
//!
//! Padding is described by a per-token `valid` flag, so left padding (`P P a b c`, what
//! generation wants: every row ends at the same column), right padding (`a b c P P`, what
//! capture over windows produces) and any other arrangement are all handled the same way:
//! padded keys are never attended to, and the position of a real token is the number of real
//! tokens before it in its row, so `P P a b c` computes exactly what `a b c` does. Activations
//! and logits at padded positions are meaningless; callers skip them using [`TokenBatch::is_valid`].

use crate::LmError;

/// Which side shorter rows are padded on by [`TokenBatch::padded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadSide {
    Left,
    Right,
}

/// `[batch, seq]` token ids, row-major, plus which of them are real tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    ids: Vec<u32>,
    batch: usize,
    seq: usize,
    /// `None`: every token is real.
    valid: Option<Vec<bool>>,
}

impl TokenBatch {
    /// One unpadded sequence.
    pub fn single(ids: &[u32]) -> Result<Self, LmError> {
        Self::from_rows(&[ids.to_vec()])
    }

    /// Rows of equal length, no padding.
    pub fn from_rows(rows: &[Vec<u32>]) -> Result<Self, LmError> {
        let seq = check_rows(rows)?;
        if let Some((r, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != seq) {
            return Err(LmError::Batch(format!(
                "row {r} has {} tokens but row 0 has {seq}; use TokenBatch::padded for ragged rows",
                row.len()
            )));
        }
        Ok(Self {
            ids: rows.concat(),
            batch: rows.len(),
            seq,
            valid: None,
        })
    }

    /// Rows of any length, padded with `pad_id` on `side` to the longest row.
    pub fn padded(rows: &[Vec<u32>], side: PadSide, pad_id: u32) -> Result<Self, LmError> {
        check_rows(rows)?;
        let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
        if let Some(r) = rows.iter().position(Vec::is_empty) {
            return Err(LmError::EmptyInput(format!("batch row {r} has no tokens")));
        }
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut valid = Vec::with_capacity(rows.len() * seq);
        for row in rows {
            let pad = seq - row.len();
            if side == PadSide::Left {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                valid.extend(std::iter::repeat_n(false, pad));
            }
            ids.extend_from_slice(row);
            valid.extend(std::iter::repeat_n(true, row.len()));
            if side == PadSide::Right {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                valid.extend(std::iter::repeat_n(false, pad));
            }
        }
        let all_valid = valid.iter().all(|&v| v);
        Ok(Self {
            ids,
            batch: rows.len(),
            seq,
            valid: (!all_valid).then_some(valid),
        })
    }

    /// Row-major ids with an explicit validity mask of the same length (`true` = real token).
    pub fn with_mask(
        ids: Vec<u32>,
        batch: usize,
        seq: usize,
        valid: Vec<bool>,
    ) -> Result<Self, LmError> {
        if batch == 0 || seq == 0 {
            return Err(LmError::EmptyInput(format!(
                "batch of shape [{batch}, {seq}]"
            )));
        }
        if ids.len() != batch * seq || valid.len() != batch * seq {
            return Err(LmError::Batch(format!(
                "{} ids and {} mask flags for a [{batch}, {seq}] batch",
                ids.len(),
                valid.len()
            )));
        }
        let all_valid = valid.iter().all(|&v| v);
        Ok(Self {
            ids,
            batch,
            seq,
            valid: (!all_valid).then_some(valid),
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn seq(&self) -> usize {
        self.seq
    }

    /// Row-major `[batch, seq]` ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.seq..(r + 1) * self.seq]
    }

    pub fn has_padding(&self) -> bool {
        self.valid.is_some()
    }

    pub fn is_valid(&self, row: usize, col: usize) -> bool {
        self.valid.as_ref().is_none_or(|v| v[row * self.seq + col])
    }

    /// Validity flags per row.
    pub fn valid_rows(&self) -> Vec<Vec<bool>> {
        (0..self.batch)
            .map(|r| (0..self.seq).map(|c| self.is_valid(r, c)).collect())
            .collect()
    }
}

fn check_rows(rows: &[Vec<u32>]) -> Result<usize, LmError> {
    let first = rows
        .first()
        .ok_or_else(|| LmError::EmptyInput("batch with no rows".into()))?;
    if rows.iter().all(Vec::is_empty) || first.is_empty() {
        return Err(LmError::EmptyInput("token list is empty".into()));
    }
    Ok(first.len())
}
