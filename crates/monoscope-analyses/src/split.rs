//! Feature splitting: for each pair of neighbouring sizes of a family, which feature of the
//! smaller SAE each feature of the larger one comes from.
//!
//! Two matches are computed for every child feature: the parent by decoder cosine (the
//! smaller SAE's feature whose unit decoder direction is nearest, by a blocked product of the
//! two decoders) and the parent by co-activation (the smaller SAE's feature that fires on the
//! largest share of the tokens the child fires on). Co-activation is preferred because it
//! says what the features *do* on the same tokens; decoder cosine decides when the child fired
//! too rarely for its shares to mean anything. See [`SplitOptions::criterion`].

use monoscope_artifacts::split::{FamilyMember, SplitFile, SplitLevel};
use monoscope_cluster::{Directions, exact_neighbours};
use monoscope_sae::{Sae, SparseCodes};
use rayon::prelude::*;

use crate::error::AnalysisError;
use crate::index::FeatureRows;

/// When a child gets a parent, and how much is kept per feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitOptions {
    /// Firings a child needs before its co-activation parent is trusted.
    pub min_firings: u64,
    /// Share of the child's firings the co-activation parent must fire on.
    pub min_coactivation: f32,
    /// Decoder cosine a cosine parent needs.
    pub min_cosine: f32,
    /// Distinct top tokens kept per feature.
    pub top_tokens: usize,
    /// Rows per block of the decoder product.
    pub block: usize,
}

impl SplitOptions {
    /// How parents are chosen, in words, with the thresholds.
    pub fn criterion(&self) -> String {
        format!(
            "a child's parent is its co-activation parent (the smaller SAE's feature firing on \
             the largest share of the child's firing tokens) when the child fired on at least {} \
             tokens and that share is at least {}; otherwise its decoder-cosine parent (nearest \
             unit decoder direction) when the cosine is at least {}; otherwise none",
            self.min_firings, self.min_coactivation, self.min_cosine
        )
    }

    /// The parent this criterion picks for one child.
    pub fn choose(
        &self,
        firings: u64,
        by_coactivation: Option<u32>,
        coactivation: f32,
        by_cosine: Option<u32>,
        cosine: f32,
    ) -> Option<u32> {
        match by_coactivation {
            Some(p) if firings >= self.min_firings && coactivation >= self.min_coactivation => {
                Some(p)
            }
            _ => by_cosine.filter(|_| cosine >= self.min_cosine),
        }
    }
}

/// For each feature of `child`, the feature of `parent` with the nearest decoder direction and
/// that cosine; `None` (cosine 0) for a child whose decoder row is zero, or when every parent's is.
pub fn cosine_parents(
    parent: &Sae,
    child: &Sae,
    names: (&str, &str),
    block: usize,
    on_block: &mut dyn FnMut(usize) -> Result<(), AnalysisError>,
) -> Result<(Vec<Option<u32>>, Vec<f32>), AnalysisError> {
    let parents = Directions::from_sae(parent, names.0)?;
    let children = Directions::from_sae(child, names.1)?;
    let mut cancelled = None;
    let lists = exact_neighbours(&children, &parents, 1, block, false, &mut |done| {
        on_block(done).map_err(|e| {
            cancelled = Some(e);
            monoscope_cluster::ClusterError::Cancelled
        })
    });
    let lists = match (lists, cancelled) {
        (_, Some(e)) => return Err(e),
        (lists, None) => lists?,
    };
    Ok(lists
        .into_iter()
        .map(|list| match list.first() {
            Some(n) => (Some(n.feature), n.cosine),
            None => (None, 0.0),
        })
        .unzip())
}

/// For each feature of the larger SAE (`child`, turned around), the feature of the smaller
/// SAE that fires on most of its firing rows (`parent_codes`, the same rows), and the share
/// of the child's firings it fires on. Ties go to the lower index.
pub fn coactivation_parents(
    parent_codes: &SparseCodes,
    child: &FeatureRows,
) -> (Vec<Option<u32>>, Vec<f32>) {
    let d_parent = parent_codes.d_sae;
    (0..child.features())
        .into_par_iter()
        .map_init(
            || (vec![0u32; d_parent], Vec::new()),
            |(counts, touched), c| {
                let rows = child.rows(c);
                for &r in rows {
                    for &p in parent_codes.row(r as usize).0 {
                        if counts[p as usize] == 0 {
                            touched.push(p);
                        }
                        counts[p as usize] += 1;
                    }
                }
                let mut best: Option<(u32, u32)> = None;
                for &p in touched.iter() {
                    let n = counts[p as usize];
                    if best.is_none_or(|(bp, bn)| n > bn || (n == bn && p < bp)) {
                        best = Some((p, n));
                    }
                    counts[p as usize] = 0;
                }
                touched.clear();
                match best {
                    Some((p, n)) => (Some(p), n as f32 / rows.len() as f32),
                    None => (None, 0.0),
                }
            },
        )
        .unzip()
}

/// The decoded tokens on which feature `f` fires most, at most `n` distinct, strongest first.
pub fn top_tokens(
    index: &FeatureRows,
    f: usize,
    token_ids: &[u32],
    n: usize,
    decode: &dyn Fn(u32) -> String,
) -> Vec<String> {
    let (rows, values) = (index.rows(f), index.values(f));
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_unstable_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut ids: Vec<u32> = Vec::with_capacity(n);
    for i in order {
        if ids.len() == n {
            break;
        }
        let id = token_ids[rows[i] as usize];
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.into_iter().map(decode).collect()
}

/// One SAE of the family with its codes of the scanned rows.
#[derive(Debug, Clone, Copy)]
pub struct MemberCodes<'a> {
    pub name: &'a str,
    pub sae_dir: &'a str,
    pub main: bool,
    pub sae: &'a Sae,
    pub codes: &'a SparseCodes,
}

/// The whole analysis over the family (smallest first) on rows with `token_ids`.
/// `on_step` is told each step and may stop the work with an error.
pub fn analyse(
    members: &[MemberCodes<'_>],
    token_ids: &[u32],
    decode: &dyn Fn(u32) -> String,
    options: &SplitOptions,
    on_step: &mut dyn FnMut(&str) -> Result<(), AnalysisError>,
) -> Result<SplitFile, AnalysisError> {
    let indexes: Vec<FeatureRows> = members
        .iter()
        .map(|m| FeatureRows::from_codes(m.codes))
        .collect();
    let mut levels = Vec::new();
    for i in 1..members.len() {
        let (parent, child) = (&members[i - 1], &members[i]);
        on_step(&format!(
            "{} → {}: decoder cosines",
            parent.name, child.name
        ))?;
        let (by_cosine, cosine) = cosine_parents(
            parent.sae,
            child.sae,
            (parent.sae_dir, child.sae_dir),
            options.block,
            &mut |_| on_step(""),
        )?;
        on_step(&format!("{} → {}: co-activations", parent.name, child.name))?;
        let (by_coactivation, coactivation) = coactivation_parents(parent.codes, &indexes[i]);
        let parent_of: Vec<Option<u32>> = (0..child.sae.d_sae)
            .map(|c| {
                options.choose(
                    indexes[i].firings(c),
                    by_coactivation[c],
                    coactivation[c],
                    by_cosine[c],
                    cosine[c],
                )
            })
            .collect();
        levels.push(SplitLevel {
            parent_member: i - 1,
            child_member: i,
            parent: parent_of,
            // A child with a zero decoder row has no nearest direction; 0 with cosine 0 says so.
            parent_by_cosine: by_cosine.iter().map(|p| p.unwrap_or(0)).collect(),
            cosine,
            parent_by_coactivation: by_coactivation,
            coactivation,
        });
    }
    on_step("families and top tokens")?;
    let mut family_members: Vec<FamilyMember> = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let index = &indexes[i];
        let firings: Vec<u64> = (0..member.sae.d_sae).map(|f| index.firings(f)).collect();
        let family: Vec<Option<u32>> = (0..member.sae.d_sae)
            .map(|f| {
                if firings[f] == 0 {
                    return None;
                }
                match i {
                    0 => Some(f as u32),
                    _ => levels[i - 1].parent[f]
                        .and_then(|p| family_members[i - 1].family[p as usize]),
                }
            })
            .collect();
        let top_tokens = (0..member.sae.d_sae)
            .map(|f| top_tokens(index, f, token_ids, options.top_tokens, decode))
            .collect();
        family_members.push(FamilyMember {
            name: member.name.to_string(),
            d_sae: member.sae.d_sae,
            sae_dir: member.sae_dir.to_string(),
            main: member.main,
            family,
            firings,
            top_tokens,
        });
    }
    Ok(SplitFile {
        members: family_members,
        criterion: options.criterion(),
        tokens: token_ids.len() as u64,
        levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoscope_sae::Architecture;

    const D_IN: usize = 8;

    fn unit(v: &[f32]) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    fn basis(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; D_IN];
        v[i] = 1.0;
        v
    }

    /// A ReLU SAE whose feature f reads `encoders[f]` and writes `decoders[f]`.
    fn sae(encoders: &[Vec<f32>], decoders: &[Vec<f32>]) -> Sae {
        let d_sae = encoders.len();
        let mut w_enc = vec![0.0; D_IN * d_sae];
        for (f, e) in encoders.iter().enumerate() {
            for (i, &v) in e.iter().enumerate() {
                w_enc[i * d_sae + f] = v;
            }
        }
        Sae {
            d_in: D_IN,
            d_sae,
            architecture: Architecture::Relu,
            w_enc,
            b_enc: vec![0.0; d_sae],
            w_dec: decoders.concat(),
            b_dec: vec![0.0; D_IN],
            threshold: None,
            apply_b_dec_to_input: false,
            metadata: Default::default(),
            extra_cfg: Default::default(),
        }
    }

    fn add(a: &[f32], b: &[f32], scale: f32) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x + scale * y).collect()
    }

    /// The small SAE has A (reads and writes e0) and B (e4). The large one splits A into A1
    /// (fires on e1, writes near e0) and A2 (fires on e2, writes near e0), has C (e5) that
    /// nothing in the small SAE explains, and D, which never fires but writes along B.
    /// Tokens: 10 of e0+e1 (id 11), 10 of e0+e2 (id 12), 10 of e5 (id 13), 6 of e4 (id 14),
    /// with growing strength so that the top tokens have an order.
    fn planted() -> (Sae, Sae, Vec<f32>, Vec<u32>) {
        let small = sae(&[basis(0), basis(4)], &[basis(0), basis(4)]);
        let large = sae(
            &[basis(1), basis(2), basis(5), basis(6)],
            &[
                unit(&add(&basis(0), &basis(1), 0.5)),
                unit(&add(&basis(0), &basis(2), 0.5)),
                basis(5),
                unit(&add(&basis(4), &basis(3), 0.2)),
            ],
        );
        let mut rows = Vec::new();
        let mut tokens = Vec::new();
        for (kind, count) in [(0, 10), (1, 10), (2, 10), (3, 6)] {
            for i in 0..count {
                let strength = 1.0 + i as f32 / 10.0;
                let x = match kind {
                    0 => add(&basis(0), &basis(1), 1.0),
                    1 => add(&basis(0), &basis(2), 1.0),
                    2 => basis(5),
                    _ => basis(4),
                };
                rows.extend(x.iter().map(|v| v * strength));
                tokens.push(11 + kind as u32);
            }
        }
        (small, large, rows, tokens)
    }

    fn options() -> SplitOptions {
        SplitOptions {
            min_firings: 5,
            min_coactivation: 0.3,
            min_cosine: 0.5,
            top_tokens: 5,
            block: 3,
        }
    }

    #[test]
    fn a_planted_split_finds_both_children_of_its_parent() {
        let (small, large, rows, tokens) = planted();
        let small_codes = small.encode_sparse(&rows).unwrap();
        let large_codes = large.encode_sparse(&rows).unwrap();
        let members = [
            MemberCodes {
                name: "small",
                sae_dir: "s",
                main: false,
                sae: &small,
                codes: &small_codes,
            },
            MemberCodes {
                name: "main",
                sae_dir: "m",
                main: true,
                sae: &large,
                codes: &large_codes,
            },
        ];
        let decode = |id: u32| format!("tok{id}");
        let mut steps = Vec::new();
        let split = analyse(&members, &tokens, &decode, &options(), &mut |s| {
            steps.push(s.to_string());
            Ok(())
        })
        .unwrap();
        assert!(!steps.is_empty());
        let level = &split.levels[0];
        // A1 and A2 fire only where A fires: co-activation 1, parent A.
        assert_eq!(level.parent_by_coactivation[..2], [Some(0), Some(0)]);
        assert_eq!(level.coactivation[..2], [1.0, 1.0]);
        assert_eq!(level.parent_by_cosine[..2], [0, 0]);
        assert!(
            level.cosine[0] > 0.85 && level.cosine[0] < 0.95,
            "{:?}",
            level.cosine
        );
        assert_eq!(level.parent[..2], [Some(0), Some(0)]);
        // C fires where nothing of the small SAE does, and its direction is far from both.
        assert_eq!(level.parent_by_coactivation[2], None);
        assert!(level.cosine[2].abs() < 1e-6);
        assert_eq!(level.parent[2], None);
        // D never fired: its decoder direction decides.
        assert_eq!(level.parent_by_coactivation[3], None);
        assert_eq!(level.parent_by_cosine[3], 1);
        assert_eq!(level.parent[3], Some(1));
        assert_eq!(split.children(0, 0), vec![0, 1]);
        assert_eq!(split.parent(1, 1), Some(0));
        assert_eq!(crate::split_stage::split_parents(&split), vec![1]);

        let (s, m) = (&split.members[0], &split.members[1]);
        assert_eq!(s.firings, vec![20, 6]);
        assert_eq!(m.firings, vec![10, 10, 10, 0]);
        assert_eq!(s.family, vec![Some(0), Some(1)]);
        assert_eq!(m.family, vec![Some(0), Some(0), None, None]);
        assert_eq!(s.top_tokens[0], vec!["tok11", "tok12"]);
        assert_eq!(m.top_tokens[2], vec!["tok13"]);
        assert!(m.top_tokens[3].is_empty());
        assert_eq!(split.tokens, tokens.len() as u64);
        assert!(
            split.criterion.contains("at least 5 tokens"),
            "{}",
            split.criterion
        );
    }

    #[test]
    fn the_criterion_falls_back_from_coactivation_to_cosine_to_none() {
        let o = options();
        assert_eq!(o.choose(10, Some(3), 0.9, Some(4), 0.9), Some(3));
        // Too few firings, or too small a share: the cosine parent, if close enough.
        assert_eq!(o.choose(4, Some(3), 0.9, Some(4), 0.6), Some(4));
        assert_eq!(o.choose(10, Some(3), 0.2, Some(4), 0.6), Some(4));
        assert_eq!(o.choose(10, Some(3), 0.2, Some(4), 0.4), None);
        assert_eq!(o.choose(0, None, 0.0, None, 0.0), None);
    }

    #[test]
    fn cancelling_the_cosine_search_stops_the_analysis() {
        let (small, large, rows, tokens) = planted();
        let small_codes = small.encode_sparse(&rows).unwrap();
        let large_codes = large.encode_sparse(&rows).unwrap();
        let members = [
            MemberCodes {
                name: "small",
                sae_dir: "s",
                main: false,
                sae: &small,
                codes: &small_codes,
            },
            MemberCodes {
                name: "main",
                sae_dir: "m",
                main: true,
                sae: &large,
                codes: &large_codes,
            },
        ];
        let mut calls = 0;
        let result = analyse(
            &members,
            &tokens,
            &|id| id.to_string(),
            &options(),
            &mut |_| {
                calls += 1;
                match calls {
                    1 => Ok(()),
                    _ => Err(AnalysisError::Cancelled),
                }
            },
        );
        assert!(
            matches!(result, Err(AnalysisError::Cancelled)),
            "{result:?}"
        );
    }
}
