//! The family of SAEs a train stage with a sweep trained on the same batches: its main SAE
//! (`<stage>/sae`) and every member (`<stage>/sweep/<name>/sae`), found from the main SAE's
//! directory and ordered by dictionary size.

use std::path::{Path, PathBuf};

use monoscope_artifacts::train::TrainOutputs;
use monoscope_sae::Sae;

use crate::error::AnalysisError;

/// The name `sweep.json` gives the train stage's own SAE.
pub const MAIN_NAME: &str = "main";

/// One SAE of the family.
#[derive(Debug, Clone)]
pub struct Member {
    /// [`MAIN_NAME`] for the train stage's own SAE, else the sweep member's name.
    pub name: String,
    pub sae_dir: PathBuf,
    /// Whether this is the SAE the rest of the run (labels, clusters, steering) used.
    pub main: bool,
    pub sae: Sae,
}

/// The family, smallest dictionary first (ties keep `sweep.json`'s order).
#[derive(Debug, Clone)]
pub struct Family {
    pub members: Vec<Member>,
    /// The train stage directory it was found in.
    pub train_dir: PathBuf,
}

impl Family {
    /// The raw norm above which the train stage counted a row as massive (its `eval.json`),
    /// when it recorded one.
    pub fn massive_norm(&self) -> Result<Option<f32>, AnalysisError> {
        let eval = monoscope_artifacts::train::TrainOutputs::new(&self.train_dir).eval()?;
        Ok(eval.and_then(|e| e.massive).map(|m| m.norm_threshold))
    }

    /// Orders `members` by dictionary size and checks that they can be compared.
    pub fn new(mut members: Vec<Member>, train_dir: PathBuf) -> Result<Self, AnalysisError> {
        members.sort_by_key(|m| m.sae.d_sae);
        if members.len() < 2 {
            return Err(AnalysisError::Invalid(format!(
                "{}: the train stage trained a single SAE, so there is no family of sizes to \
                 compare: add a `sweep` to it (e.g. `sweep = [{{ name = \"wide\", d_sae = … }}]`) \
                 and run it again",
                train_dir.display()
            )));
        }
        let d_in = members[0].sae.d_in;
        if let Some(other) = members.iter().find(|m| m.sae.d_in != d_in) {
            return Err(AnalysisError::Invalid(format!(
                "{}: d_in = {} differs from {}'s d_in = {d_in}: the members of a family read the \
                 same activations",
                other.sae_dir.display(),
                other.sae.d_in,
                members[0].sae_dir.display()
            )));
        }
        Ok(Family { members, train_dir })
    }

    /// The SAE the rest of the run used.
    pub fn main(&self) -> &Member {
        self.members
            .iter()
            .find(|m| m.main)
            .unwrap_or(&self.members[0])
    }

    pub fn saes(&self) -> Vec<&Sae> {
        self.members.iter().map(|m| &m.sae).collect()
    }
}

/// The family of the main SAE in `main_sae` (a train stage's `sae` directory).
pub fn load_family(main_sae: &Path) -> Result<Family, AnalysisError> {
    let outputs = TrainOutputs::around_sae(main_sae).ok_or_else(|| {
        AnalysisError::Invalid(format!(
            "{}: not the `sae` directory of a train stage, so no family of SAEs can be found \
             around it: connect the `sae` output of a train stage with a `sweep`",
            main_sae.display()
        ))
    })?;
    if !outputs.sweep_path().is_file() {
        return Family::new(vec![load_member(MAIN_NAME, main_sae, true)?], outputs.dir);
    }
    let members = outputs
        .sweep_names()?
        .iter()
        .map(|name| match name.as_str() {
            MAIN_NAME => load_member(name, main_sae, true),
            _ => load_member(name, &outputs.member(name).sae_dir(), false),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Family::new(members, outputs.dir)
}

fn load_member(name: &str, dir: &Path, main: bool) -> Result<Member, AnalysisError> {
    Ok(Member {
        name: name.to_string(),
        sae_dir: dir.to_path_buf(),
        main,
        sae: monoscope_sae::load_sae(dir)?,
    })
}
