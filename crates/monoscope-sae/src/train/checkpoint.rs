//! Checkpoints: everything a run needs to continue exactly where it stopped — parameters,
//! Adam moments, step, dead-latent counters, the metrics window, the BatchTopK threshold, the
//! RNG, and an opaque data position from the caller — written atomically as a directory
//! (`state.safetensors` + `trainer.json`).

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::compute::Compute;
use super::config::TrainConfig;
use super::engine::Engine;
use super::params::{NAMES, Params};
use super::trainer::{Trainer, Window};
use crate::SaeError;
use crate::format::{TensorFile, write_dir_atomic, write_tensors};
use monoscope_artifacts::fault::FaultPoint;

const STATE: &str = "state.safetensors";
const META: &str = "trainer.json";
/// 2: the optimizer choice and the schedule-free average's weights.
const FORMAT: &str = "monoscope-sae-checkpoint/2";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    config: TrainConfig,
    scale_bits: u32,
    step: u64,
    tokens: u64,
    /// f64 values travel as their bit patterns: JSON number parsing need not round-trip.
    batch_threshold_bits: Option<u64>,
    average_weight_sum_bits: u64,
    average_lr_max_bits: u32,
    window: Window,
    rng_seed: Vec<u8>,
    rng_stream: u64,
    /// u128 does not survive every JSON reader: kept as a decimal string.
    rng_word_pos: String,
    data_position: serde_json::Value,
}

impl Trainer {
    /// Writes a checkpoint directory at `dir` (replacing any previous one atomically).
    /// `data_position` is stored as given and handed back by [`Trainer::resume`].
    pub fn save_checkpoint(
        &self,
        dir: &Path,
        data_position: serde_json::Value,
    ) -> Result<(), SaeError> {
        let meta = Meta {
            format: FORMAT.into(),
            config: self.cfg.clone(),
            scale_bits: self.scale.to_bits(),
            step: self.step,
            tokens: self.tokens,
            batch_threshold_bits: self.batch_threshold.map(f64::to_bits),
            average_weight_sum_bits: self.average_weight_sum.to_bits(),
            average_lr_max_bits: self.average_lr_max.to_bits(),
            window: self.window.clone(),
            rng_seed: self.rng.get_seed().to_vec(),
            rng_stream: self.rng.get_stream(),
            rng_word_pos: self.rng.get_word_pos().to_string(),
            data_position,
        };
        // A device trainer's tensors are read back: the file is the same whichever computed.
        let view = self.engine.view()?;
        write_dir_atomic(dir, |tmp| {
            let mut entries = Vec::new();
            for (prefix, params) in [("p", &view.p), ("m", &view.m), ("v", &view.v)] {
                for (name, t) in NAMES.iter().zip(params.tensors()) {
                    if !t.is_empty() {
                        let key = format!("{prefix}.{name}");
                        entries.push(crate::format::f32_entry(&key, &[t.len()], t));
                    }
                }
            }
            entries.push(u64_entry("since_fired", &self.since_fired));
            entries.push(u64_entry("window_fired", &self.window.fired));
            write_tensors(&tmp.join(STATE), &entries)?;
            let reached = monoscope_artifacts::fault::reach(FaultPoint::CheckpointSave);
            reached.map_err(SaeError::io(&tmp.join(META)))?;
            let path = tmp.join(META);
            let text = serde_json::to_vec_pretty(&meta).map_err(|source| SaeError::Json {
                path: path.clone(),
                source,
            })?;
            std::fs::write(&path, text).map_err(SaeError::io(&path))
        })
    }

    /// [`Trainer::resume`] computing on `compute` (whichever compute wrote the checkpoint).
    pub fn resume_on(
        dir: &Path,
        compute: Compute,
    ) -> Result<(Trainer, serde_json::Value), SaeError> {
        let (trainer, position) = Trainer::resume(dir)?;
        Ok((trainer.on(compute)?, position))
    }

    /// Restores a trainer from a checkpoint directory; returns it with the caller's data
    /// position. Continuing gives bit-identical results to a run that never stopped.
    pub fn resume(dir: &Path) -> Result<(Trainer, serde_json::Value), SaeError> {
        let meta_path = dir.join(META);
        let meta: Meta =
            serde_json::from_value(crate::format::read_json(&meta_path)?).map_err(|source| {
                SaeError::Json {
                    path: meta_path.clone(),
                    source,
                }
            })?;
        let bad = |reason: String| SaeError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
        };
        if meta.format != FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{FORMAT}`",
                meta.format
            )));
        }
        meta.config.validate()?;
        let mut trainer = Trainer::new(meta.config.clone(), f32::from_bits(meta.scale_bits))?;
        let state = TensorFile::open(&dir.join(STATE))?;
        let Engine::Host(host) = &mut trainer.engine else {
            unreachable!("Trainer::new computes on the host")
        };
        for (prefix, params) in [("p", &mut host.p), ("m", &mut host.m), ("v", &mut host.v)] {
            load_params(&state, prefix, params)?;
        }
        trainer.since_fired = u64_tensor(&state, "since_fired", meta.config.d_sae, dir)?;
        let mut window = meta.window;
        window.fired = u64_tensor(&state, "window_fired", meta.config.d_sae, dir)?;
        trainer.window = window;
        trainer.step = meta.step;
        trainer.tokens = meta.tokens;
        trainer.batch_threshold = meta.batch_threshold_bits.map(f64::from_bits);
        trainer.average_weight_sum = f64::from_bits(meta.average_weight_sum_bits);
        trainer.average_lr_max = f32::from_bits(meta.average_lr_max_bits);
        let seed: [u8; 32] = meta
            .rng_seed
            .try_into()
            .map_err(|_| bad("rng_seed is not 32 bytes".into()))?;
        let word_pos: u128 = meta
            .rng_word_pos
            .parse()
            .map_err(|_| bad(format!("rng_word_pos `{}`", meta.rng_word_pos)))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(meta.rng_stream);
        rng.set_word_pos(word_pos);
        trainer.rng = rng;
        Ok((trainer, meta.data_position))
    }
}

fn load_params(state: &TensorFile, prefix: &str, params: &mut Params) -> Result<(), SaeError> {
    for (name, t) in NAMES.iter().zip(params.tensors_mut()) {
        if !t.is_empty() {
            *t = state.f32(&format!("{prefix}.{name}"), &[t.len()])?;
        }
    }
    Ok(())
}

fn u64_entry(name: &str, data: &[u64]) -> crate::format::Entry {
    let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name.to_owned(), Dtype::U64, vec![data.len()], bytes)
}

fn u64_tensor(state: &TensorFile, key: &str, len: usize, dir: &Path) -> Result<Vec<u64>, SaeError> {
    let (dtype, shape, bytes) = state.raw(key)?;
    if dtype != Dtype::U64 || shape != [len] {
        return Err(SaeError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("`{key}` is {dtype:?} {shape:?}, expected U64 [{len}]"),
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect())
}

/// Serde adapter: an f64 as its IEEE-754 bit pattern (a u64, exact in JSON).
pub(super) mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}
