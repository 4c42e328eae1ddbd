//! The outputs of a run that the site shows: the SAE (required) and, when the run has them,
//! the train stage's evaluation, the labels, the clusters, the steering report (with its
//! attributions and contrastive searches) and the analyses (feature splitting across sizes,
//! concept coverage), each read through its typed record in `monoscope-artifacts`.

use std::path::{Path, PathBuf};

use monoscope_artifacts::cluster::{self, ClusterOutputs};
use monoscope_artifacts::coverage::{self, CoverageFile, CoverageOutputs};
use monoscope_artifacts::label::{self, LabelOutputs};
use monoscope_artifacts::split::{self, SplitFile, SplitOutputs};
use monoscope_artifacts::steer::{self, Attribution, Contrast, SteerOutputs};
use monoscope_artifacts::train::{self, EvalReport, TrainOutputs};
use monoscope_artifacts::{CompletedStage, Run};
use monoscope_sae::SaeInfo;

use crate::error::Result;

/// Where a run's outputs are: the directories as the stages emit them.
#[derive(Debug, Clone, Default)]
pub struct RunFiles {
    /// The SAE directory; a train or import stage puts `eval.json` beside it.
    pub sae_dir: PathBuf,
    pub labels: Option<LabelOutputs>,
    pub clusters: Option<ClusterOutputs>,
    /// The steer stage's directory: the report, and attributions and contrastive searches when
    /// the stage was asked for them.
    pub steering: Option<SteerOutputs>,
    /// Feature splitting across a family of SAEs, one of which is the SAE above.
    pub split: Option<SplitOutputs>,
    pub coverage: Option<CoverageOutputs>,
}

impl RunFiles {
    /// The outputs of a finished run, each stage found by the kind `run.json` records for it
    /// (a run with two stages of one kind is an error naming them).
    pub fn from_run(run_dir: &Path) -> Result<RunFiles> {
        let run = Run::open(run_dir)?;
        let sae = run.require(train::KINDS, None, "an SAE")?;
        let dir = |stage: Option<CompletedStage>| stage.map(|s| s.dir);
        Ok(RunFiles {
            sae_dir: TrainOutputs::new(sae.dir).sae_dir(),
            labels: dir(run.find(&[label::KIND], None, "labels")?).map(LabelOutputs::new),
            clusters: dir(run.find(&[cluster::KIND], None, "clusters")?).map(ClusterOutputs::new),
            steering: dir(run.find(&[steer::KIND], None, "a steering report")?)
                .map(SteerOutputs::new),
            split: dir(run.find(&[split::KIND], None, "feature splitting")?).map(SplitOutputs::new),
            coverage: dir(run.find(&[coverage::KIND], None, "concept coverage")?)
                .map(CoverageOutputs::new),
        })
    }

    pub fn sae_info(&self) -> Result<SaeInfo> {
        Ok(monoscope_sae::read_sae_info(&self.sae_dir)?)
    }

    /// The `eval.json` of the stage that wrote the SAE, when there is one.
    pub fn eval(&self) -> Result<Option<EvalReport>> {
        match TrainOutputs::around_sae(&self.sae_dir) {
            Some(outputs) => Ok(outputs.eval()?),
            None => Ok(None),
        }
    }

    /// The label stage's outputs when they hold evidence.
    pub fn evidence(&self) -> Option<&LabelOutputs> {
        self.labels.as_ref().filter(|l| l.has_evidence())
    }

    /// The label stage's outputs when they hold labels.
    pub fn labelled(&self) -> Option<&LabelOutputs> {
        self.labels.as_ref().filter(|l| l.has_labels())
    }

    /// The cluster stage's outputs when they hold neighbours.
    pub fn neighbours(&self) -> Option<&ClusterOutputs> {
        self.clusters.as_ref().filter(|c| c.has_neighbours())
    }

    pub fn steering_report(&self) -> Result<Option<steer::Report>> {
        match &self.steering {
            Some(outputs) => Ok(outputs.report()?),
            None => Ok(None),
        }
    }

    /// The attribution of each prompt's target to features, when the steer stage made them.
    pub fn attributions(&self) -> Result<Option<Vec<Attribution>>> {
        match &self.steering {
            Some(outputs) => Ok(outputs.attributions()?),
            None => Ok(None),
        }
    }

    /// The contrastive searches, when the steer stage ran them.
    pub fn contrasts(&self) -> Result<Option<Vec<Contrast>>> {
        match &self.steering {
            Some(outputs) => Ok(outputs.contrasts()?),
            None => Ok(None),
        }
    }

    pub fn split_file(&self) -> Result<Option<SplitFile>> {
        match &self.split {
            Some(outputs) => Ok(outputs.split()?),
            None => Ok(None),
        }
    }

    pub fn coverage_file(&self) -> Result<Option<CoverageFile>> {
        match &self.coverage {
            Some(outputs) => Ok(outputs.coverage()?),
            None => Ok(None),
        }
    }
}
