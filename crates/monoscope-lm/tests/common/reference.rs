//! A deliberately naive transformer: one sequence, one position at a time, `f64` everywhere,
//! every equation written out. It reads the canonical `[out, in]` tensors as they are and applies
//! RoPE in the checkpoint's own layout, so it shares neither code nor tricks with the crate.

// Index loops on purpose: they read like the equations they transcribe.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;

use monoscope_formats::{Architecture, HostData, LoadedModel, RopeLayout};

/// Every hook (TransformerLens name → `[seq][d_model]`) and the logits `[seq][vocab]`.
pub struct RefOut {
    pub hooks: BTreeMap<String, Vec<Vec<f64>>>,
    pub logits: Vec<Vec<f64>>,
}

impl RefOut {
    pub fn hook_flat(&self, name: &str) -> Vec<f64> {
        self.hooks[name].concat()
    }

    pub fn logits_flat(&self) -> Vec<f64> {
        self.logits.concat()
    }
}

fn tensor<'a>(m: &'a LoadedModel, name: &str) -> &'a [f32] {
    maybe(m, name).unwrap_or_else(|| panic!("reference: missing {name}"))
}

/// The test models are built in f32.
fn maybe<'a>(m: &'a LoadedModel, name: &str) -> Option<&'a [f32]> {
    m.tensors.get(name).map(|t| match &t.data {
        HostData::F32(v) => v.as_slice(),
        _ => panic!("reference: {name} is not f32"),
    })
}

/// y = W x + b with W stored `[out, in]`.
fn matvec(w: &[f32], b: Option<&[f32]>, x: &[f64]) -> Vec<f64> {
    let inp = x.len();
    let out = w.len() / inp;
    let mut y = vec![0.0; out];
    for o in 0..out {
        let mut s = 0.0;
        for i in 0..inp {
            s += w[o * inp + i] as f64 * x[i];
        }
        if let Some(b) = b {
            s += b[o] as f64;
        }
        y[o] = s;
    }
    y
}

/// RMSNorm without gain: x / sqrt(mean(x²) + eps).
fn rms(x: &[f64], eps: f64) -> Vec<f64> {
    let mut ms = 0.0;
    for v in x {
        ms += v * v;
    }
    ms /= x.len() as f64;
    x.iter().map(|v| v / (ms + eps).sqrt()).collect()
}

/// LayerNorm without gain/bias: (x - mean) / sqrt(var + eps), biased variance.
fn layer(x: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    x.iter().map(|v| (v - mean) / (var + eps).sqrt()).collect()
}

fn gain_bias(x: &[f64], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
    (0..x.len())
        .map(|i| x[i] * w[i] as f64 + b.map_or(0.0, |b| b[i] as f64))
        .collect()
}

/// Rotates one head's vector in place at `pos`.
fn rope(v: &mut [f64], pos: usize, theta: f64, layout: RopeLayout) {
    let hd = v.len();
    for i in 0..hd / 2 {
        let angle = pos as f64 * theta.powf(-2.0 * i as f64 / hd as f64);
        let (a, b) = match layout {
            RopeLayout::AdjacentPairs => (2 * i, 2 * i + 1),
            RopeLayout::HalfSplit => (i, i + hd / 2),
        };
        let (x, y) = (v[a], v[b]);
        v[a] = x * angle.cos() - y * angle.sin();
        v[b] = x * angle.sin() + y * angle.cos();
    }
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Runs one unpadded sequence.
pub fn forward(m: &LoadedModel, ids: &[u32]) -> RefOut {
    let c = &m.config;
    let gpt2 = c.architecture == Architecture::Gpt2;
    let norm = |x: &[f64]| {
        if gpt2 {
            layer(x, c.norm_eps)
        } else {
            rms(x, c.norm_eps)
        }
    };
    let (h, kvh, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
    let t = ids.len();
    let mut hooks = BTreeMap::new();

    let embed = tensor(m, "embed_tokens");
    let mut x: Vec<Vec<f64>> = (0..t)
        .map(|p| {
            let id = ids[p] as usize;
            (0..c.d_model)
                .map(|i| {
                    let mut v = embed[id * c.d_model + i] as f64;
                    if gpt2 {
                        v += tensor(m, "embed_positions")[p * c.d_model + i] as f64;
                    }
                    v
                })
                .collect()
        })
        .collect();

    for l in 0..c.n_layers {
        let name = |s: &str| format!("layers.{l}.{s}");
        hooks.insert(format!("blocks.{l}.hook_resid_pre"), x.clone());
        // Attention: project every position, rotate, then attend causally.
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, xp) in x.iter().enumerate() {
            let hn = gain_bias(
                &norm(xp),
                tensor(m, &name("attn_norm.weight")),
                maybe(m, &name("attn_norm.bias")),
            );
            let mut q = matvec(
                tensor(m, &name("q_proj.weight")),
                maybe(m, &name("q_proj.bias")),
                &hn,
            );
            let mut k = matvec(
                tensor(m, &name("k_proj.weight")),
                maybe(m, &name("k_proj.bias")),
                &hn,
            );
            let v = matvec(
                tensor(m, &name("v_proj.weight")),
                maybe(m, &name("v_proj.bias")),
                &hn,
            );
            if !gpt2 {
                for head in q.chunks_mut(hd) {
                    rope(head, p, c.rope_theta, c.rope_layout);
                }
                for head in k.chunks_mut(hd) {
                    rope(head, p, c.rope_theta, c.rope_layout);
                }
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let mut attn_out = Vec::new();
        for p in 0..t {
            let mut concat = vec![0.0; h * hd];
            for head in 0..h {
                let g = head / (h / kvh);
                let q = &qs[p][head * hd..(head + 1) * hd];
                let mut scores = Vec::new();
                for j in 0..=p {
                    let k = &ks[j][g * hd..(g + 1) * hd];
                    let dot: f64 = (0..hd).map(|i| q[i] * k[i]).sum();
                    scores.push(dot / (hd as f64).sqrt());
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    for i in 0..hd {
                        concat[head * hd + i] += e / total * vs[j][g * hd + i];
                    }
                }
            }
            attn_out.push(matvec(
                tensor(m, &name("o_proj.weight")),
                maybe(m, &name("o_proj.bias")),
                &concat,
            ));
        }
        hooks.insert(format!("blocks.{l}.hook_attn_out"), attn_out.clone());
        let mut mlp_out = Vec::new();
        for p in 0..t {
            for i in 0..c.d_model {
                x[p][i] += attn_out[p][i];
            }
            let hn = gain_bias(
                &norm(&x[p]),
                tensor(m, &name("mlp_norm.weight")),
                maybe(m, &name("mlp_norm.bias")),
            );
            let up = matvec(
                tensor(m, &name("up_proj.weight")),
                maybe(m, &name("up_proj.bias")),
                &hn,
            );
            let act: Vec<f64> = if gpt2 {
                up.iter().map(|&u| gelu_tanh(u)).collect()
            } else {
                let gate = matvec(tensor(m, &name("gate_proj.weight")), None, &hn);
                (0..up.len()).map(|i| silu(gate[i]) * up[i]).collect()
            };
            let out = matvec(
                tensor(m, &name("down_proj.weight")),
                maybe(m, &name("down_proj.bias")),
                &act,
            );
            for i in 0..c.d_model {
                x[p][i] += out[i];
            }
            mlp_out.push(out);
        }
        hooks.insert(format!("blocks.{l}.hook_mlp_out"), mlp_out);
        hooks.insert(format!("blocks.{l}.hook_resid_post"), x.clone());
    }

    let normalized: Vec<Vec<f64>> = x.iter().map(|xp| norm(xp)).collect();
    hooks.insert("ln_final.hook_normalized".into(), normalized.clone());
    let head = if c.tied_embeddings {
        tensor(m, "embed_tokens")
    } else {
        tensor(m, "lm_head.weight")
    };
    let logits = normalized
        .iter()
        .map(|n| {
            let scaled = gain_bias(
                n,
                tensor(m, "final_norm.weight"),
                maybe(m, "final_norm.bias"),
            );
            matvec(head, None, &scaled)
        })
        .collect();
    RefOut { hooks, logits }
}
