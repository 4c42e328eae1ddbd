//! The site's data for the paper's analyses: feature splitting across a family of SAEs
//! (`split.json`), concept coverage against frequency (`coverage.json`), and the steer stage's
//! attributions and contrastive searches. Each file is checked against the site's SAE before
//! anything is written, so that a page never links to a feature that does not exist.

use std::path::Path;

use monoscope_artifacts::coverage::CoverageFile;
use monoscope_artifacts::split::{SplitFile, SplitLevel};
use monoscope_artifacts::steer::{Attribution, Contrast};
use serde_json::{Map, Value, json};

use crate::error::{BrowserError, Result};

/// Descendants listed per larger member on a feature page; the rest are counted. A feature of
/// a small SAE can have hundreds of descendants in a large one.
const CHILDREN_SHOWN_PER_MEMBER: usize = 24;
/// Families on the Families page, the largest first.
const FAMILIES_SHOWN: usize = 24;
/// Children listed under one node of a family tree (the most frequent first).
const TREE_CHILDREN_SHOWN: usize = 12;
/// Nodes in one family's tree; a family that splits into more is cut, and the cuts counted.
const TREE_NODES_SHOWN: usize = 300;

fn invalid(path: &Path, what: impl std::fmt::Display) -> BrowserError {
    BrowserError::Invalid(format!("{}: {what}", path.display()))
}

/// `split.json`, checked, with each level's links inverted (parent → children).
pub(crate) struct SplitView {
    file: SplitFile,
    /// Index into `members` of the SAE the site is about.
    main: usize,
    /// `levels_into[k]`: the level whose children are member `k`'s features.
    levels_into: Vec<Option<usize>>,
    /// `children[k][f]`: the features of member `k + 1` whose parent is feature `f` of member
    /// `k`, the most frequent first.
    children: Vec<Vec<Vec<u32>>>,
}

impl SplitView {
    /// Checks that the family's main member is the site's SAE and that every index is in range.
    pub(crate) fn new(file: SplitFile, d_sae: usize, path: &Path) -> Result<SplitView> {
        let mains: Vec<usize> = (0..file.members.len())
            .filter(|&i| file.members[i].main)
            .collect();
        let main = match mains.as_slice() {
            [main] => *main,
            [] => return Err(invalid(path, "no member is marked `main`")),
            _ => {
                return Err(invalid(
                    path,
                    format!("{} members are marked `main`", mains.len()),
                ));
            }
        };
        if file.members[main].d_sae != d_sae {
            return Err(invalid(
                path,
                format!(
                    "the main member `{}` has {} features but the site's SAE has {d_sae}",
                    file.members[main].name, file.members[main].d_sae
                ),
            ));
        }
        let roots = file.members[0].d_sae;
        for m in &file.members {
            let name = &m.name;
            for (field, len) in [
                ("family", m.family.len()),
                ("firings", m.firings.len()),
                ("top_tokens", m.top_tokens.len()),
            ] {
                if len != m.d_sae {
                    return Err(invalid(
                        path,
                        format!(
                            "member `{name}`: {field} has {len} entries for {} features",
                            m.d_sae
                        ),
                    ));
                }
            }
            if let Some(f) = m.family.iter().flatten().find(|&&f| f as usize >= roots) {
                return Err(invalid(
                    path,
                    format!(
                        "member `{name}`: family {f} is out of range (the smallest member has {roots} features)"
                    ),
                ));
            }
        }
        let mut levels_into = vec![None; file.members.len()];
        for (i, level) in file.levels.iter().enumerate() {
            check_level(&file, level, path)?;
            levels_into[level.child_member] = Some(i);
        }
        let children = (0..file.members.len())
            .map(|k| {
                let mut lists = vec![Vec::new(); file.members[k].d_sae];
                if let Some(level) = levels_into.get(k + 1).copied().flatten() {
                    let firings = &file.members[k + 1].firings;
                    for (child, parent) in file.levels[level].parent.iter().enumerate() {
                        if let Some(p) = parent {
                            lists[*p as usize].push(child as u32);
                        }
                    }
                    for list in &mut lists {
                        list.sort_by(|a, b| {
                            firings[*b as usize]
                                .cmp(&firings[*a as usize])
                                .then(a.cmp(b))
                        });
                    }
                }
                lists
            })
            .collect();
        Ok(SplitView {
            file,
            main,
            levels_into,
            children,
        })
    }

    /// More than one size: only then is there anything to split.
    pub(crate) fn has_family(&self) -> bool {
        self.file.members.len() > 1
    }

    pub(crate) fn main_name(&self) -> &str {
        &self.file.members[self.main].name
    }

    /// Each feature of the site's SAE's family (its ancestor in the smallest member).
    pub(crate) fn main_family(&self) -> &[Option<u32>] {
        &self.file.members[self.main].family
    }

    /// The family's members and how parents were chosen, for the index.
    pub(crate) fn summary(&self) -> Value {
        json!({
            "criterion": self.file.criterion,
            "tokens": self.file.tokens,
            "main": self.main,
            "members": self.file.members.iter().map(|m| json!({ "name": m.name, "d_sae": m.d_sae, "main": m.main })).collect::<Vec<_>>(),
        })
    }

    fn level(&self, child_member: usize) -> Option<&SplitLevel> {
        self.levels_into
            .get(child_member)
            .copied()
            .flatten()
            .map(|i| &self.file.levels[i])
    }

    /// One feature of one member: its firings and top tokens and, past the smallest member,
    /// the link to its parent (the chosen parent, and the best match by each measure with its
    /// value, which need not be the chosen one).
    fn node(&self, member: usize, feature: u32) -> Map<String, Value> {
        let m = &self.file.members[member];
        let f = feature as usize;
        let mut node = Map::new();
        node.insert("member".into(), member.into());
        node.insert("feature".into(), feature.into());
        node.insert("firings".into(), m.firings[f].into());
        node.insert("top_tokens".into(), json!(m.top_tokens[f]));
        if let Some(level) = self.level(member) {
            node.insert(
                "link".into(),
                json!({
                    "parent": level.parent[f],
                    "cosine": level.cosine[f],
                    "cosine_to": level.parent_by_cosine[f],
                    "coactivation": level.coactivation[f],
                    "coactivation_to": level.parent_by_coactivation[f],
                }),
            );
        }
        node
    }

    /// What a feature page of the site's SAE shows: its ancestors in each smaller member (each
    /// with the link that leads to it from one size up) and its descendants in each larger one.
    pub(crate) fn feature(&self, id: usize) -> Value {
        let mut parents = Vec::new();
        let mut current = id as u32;
        for member in (1..=self.main).rev() {
            let Some(level) = self.level(member) else {
                break;
            };
            let Some(parent) = level.parent[current as usize] else {
                break;
            };
            let c = current as usize;
            let mut row = self.node(member - 1, parent);
            row.remove("link");
            row.insert("cosine".into(), level.cosine[c].into());
            row.insert("cosine_to".into(), level.parent_by_cosine[c].into());
            row.insert("coactivation".into(), level.coactivation[c].into());
            row.insert(
                "coactivation_to".into(),
                json!(level.parent_by_coactivation[c]),
            );
            parents.push(Value::Object(row));
            current = parent;
        }
        let mut children = Vec::new();
        let mut frontier = vec![id as u32];
        for member in self.main + 1..self.file.members.len() {
            let firings = &self.file.members[member].firings;
            let mut next: Vec<u32> = frontier
                .iter()
                .flat_map(|&f| self.children[member - 1][f as usize].iter().copied())
                .collect();
            if next.is_empty() {
                break;
            }
            next.sort_by(|a, b| {
                firings[*b as usize]
                    .cmp(&firings[*a as usize])
                    .then(a.cmp(b))
            });
            let shown: Vec<Value> = next
                .iter()
                .take(CHILDREN_SHOWN_PER_MEMBER)
                .map(|&c| Value::Object(self.node(member, c)))
                .collect();
            children.push(json!({ "member": member, "total": next.len(), "features": shown }));
            frontier = next;
        }
        json!({
            "family": self.main_family()[id],
            "parents": parents,
            "children": children,
        })
    }

    /// The largest families that split, each as a tree from its root in the smallest member.
    pub(crate) fn families(&self) -> Value {
        let members = &self.file.members;
        let roots = members[0].d_sae;
        // sizes[r][m]: features of member m in family r.
        let mut sizes = vec![vec![0usize; members.len()]; roots];
        for (m, member) in members.iter().enumerate() {
            for r in member.family.iter().flatten() {
                sizes[*r as usize][m] += 1;
            }
        }
        let last = members.len() - 1;
        let mut ranked: Vec<usize> = (0..roots).filter(|&r| sizes[r][last] > 1).collect();
        let split = ranked.len();
        ranked.sort_by(|&a, &b| {
            sizes[b][last]
                .cmp(&sizes[a][last])
                .then(members[0].firings[b].cmp(&members[0].firings[a]))
                .then(a.cmp(&b))
        });
        let families: Vec<Value> = ranked
            .iter()
            .take(FAMILIES_SHOWN)
            .map(|&root| {
                let mut budget = TREE_NODES_SHOWN;
                json!({
                    "root": root,
                    "sizes": sizes[root],
                    "tree": self.tree(0, root as u32, &mut budget),
                })
            })
            .collect();
        let mut data = self.summary();
        data["roots"] = roots.into();
        data["split"] = split.into();
        data["families"] = Value::Array(families);
        data
    }

    fn tree(&self, member: usize, feature: u32, budget: &mut usize) -> Value {
        *budget = budget.saturating_sub(1);
        let mut node = self.node(member, feature);
        let kids = self
            .children
            .get(member)
            .map(|c| c[feature as usize].as_slice())
            .unwrap_or_default();
        let shown = kids.len().min(TREE_CHILDREN_SHOWN).min(*budget);
        let subtrees: Vec<Value> = kids[..shown]
            .iter()
            .map(|&c| self.tree(member + 1, c, budget))
            .collect();
        node.insert("children".into(), Value::Array(subtrees));
        if kids.len() > shown {
            node.insert("more".into(), (kids.len() - shown).into());
        }
        Value::Object(node)
    }
}

fn check_level(file: &SplitFile, level: &SplitLevel, path: &Path) -> Result<()> {
    let members = file.members.len();
    if level.child_member != level.parent_member + 1 || level.child_member >= members {
        return Err(invalid(
            path,
            format!(
                "a level links member {} to member {}: expected adjacent members of {members}",
                level.child_member, level.parent_member
            ),
        ));
    }
    let children = file.members[level.child_member].d_sae;
    let parents = file.members[level.parent_member].d_sae;
    let at = format!("level {} → {}", level.child_member, level.parent_member);
    for (field, len) in [
        ("parent", level.parent.len()),
        ("parent_by_cosine", level.parent_by_cosine.len()),
        ("cosine", level.cosine.len()),
        ("parent_by_coactivation", level.parent_by_coactivation.len()),
        ("coactivation", level.coactivation.len()),
    ] {
        if len != children {
            return Err(invalid(
                path,
                format!("{at}: {field} has {len} entries for {children} features"),
            ));
        }
    }
    let out_of_range = level
        .parent
        .iter()
        .flatten()
        .chain(&level.parent_by_cosine)
        .chain(level.parent_by_coactivation.iter().flatten())
        .find(|&&p| p as usize >= parents);
    if let Some(p) = out_of_range {
        return Err(invalid(
            path,
            format!("{at}: parent {p} is out of range (the smaller member has {parents} features)"),
        ));
    }
    Ok(())
}

/// `coverage.json` for the page, with which of its members is the site's SAE (`main_member`),
/// so that only that member's features link to feature pages. A coverage file names members
/// as the split stage does (`main` for the train stage's own SAE); failing that, the one
/// member of the site's size is taken.
pub(crate) fn coverage(
    file: &CoverageFile,
    main_name: Option<&str>,
    d_sae: usize,
    path: &Path,
) -> Result<Value> {
    let members = file.members.len();
    for concept in &file.concepts {
        if concept.best.len() != members {
            return Err(invalid(
                path,
                format!(
                    "concept `{}` has {} matches for {members} members",
                    concept.term,
                    concept.best.len()
                ),
            ));
        }
    }
    for bin in &file.bins {
        if bin.covered_fraction.len() != members {
            return Err(invalid(
                path,
                format!(
                    "the bin from {} to {} has {} fractions for {members} members",
                    bin.low,
                    bin.high,
                    bin.covered_fraction.len()
                ),
            ));
        }
    }
    let by_name = |name: &str| file.members.iter().position(|m| m.name == name);
    let same_size: Vec<usize> = (0..members)
        .filter(|&i| file.members[i].d_sae == d_sae)
        .collect();
    let main = main_name
        .and_then(by_name)
        .or_else(|| by_name("main"))
        .filter(|&i| file.members[i].d_sae == d_sae)
        .or(match same_size.as_slice() {
            [only] => Some(*only),
            _ => None,
        });
    for (i, member) in file.members.iter().enumerate() {
        for concept in &file.concepts {
            if let Some(f) = concept.best[i].feature
                && f as usize >= member.d_sae
            {
                return Err(invalid(
                    path,
                    format!(
                        "concept `{}`: feature {f} is out of range (member `{}` has {} features)",
                        concept.term, member.name, member.d_sae
                    ),
                ));
            }
        }
    }
    let mut data = to_value(file)?;
    data["main_member"] = json!(main);
    Ok(data)
}

/// The attributions for the page, checked against the site's SAE and each prompt's tokens.
pub(crate) fn attributions(list: &[Attribution], d_sae: usize, path: &Path) -> Result<Value> {
    for (n, a) in list.iter().enumerate() {
        let at = |what: String| invalid(path, format!("prompt {n} ({:?}): {what}", a.prompt));
        for entry in &a.entries {
            if entry.feature as usize >= d_sae {
                return Err(at(format!(
                    "feature {} is out of range (the SAE has {d_sae} features)",
                    entry.feature
                )));
            }
            if entry.position >= a.tokens.len() {
                return Err(at(format!(
                    "position {} is past the {} tokens",
                    entry.position,
                    a.tokens.len()
                )));
            }
        }
    }
    to_value(&list)
}

/// The contrastive searches for the page, checked against the site's SAE.
pub(crate) fn contrasts(list: &[Contrast], d_sae: usize, path: &Path) -> Result<Value> {
    for c in list {
        if let Some(hit) = c.hits.iter().find(|h| h.feature as usize >= d_sae) {
            return Err(invalid(
                path,
                format!(
                    "search `{}`: feature {} is out of range (the SAE has {d_sae} features)",
                    c.name, hit.feature
                ),
            ));
        }
    }
    to_value(&list)
}

pub(crate) fn to_value(value: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| BrowserError::Invalid(format!("cannot serialise site data: {e}")))
}
