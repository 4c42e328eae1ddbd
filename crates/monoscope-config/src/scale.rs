//! How a pipeline runs beyond one thread per stage: the backend (`[pipeline] backend`), a
//! stage's `parts = N`, and the scheduler resources of its jobs (`[<stage>.slurm]`).

use serde::{Deserialize, Serialize};

/// `[pipeline] backend`: where stages and their parts run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// On this machine: stages as threads of `monoscope run`, the parts of a stage as child
    /// processes, at most `max_parallel` at once.
    #[default]
    Local,
    /// As Slurm jobs: each stage's parts as a job array, its merge and every other stage as a
    /// job that depends on its inputs' jobs. The run directory must be on a file system that
    /// every node sees.
    Slurm,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Local => "local",
            Backend::Slurm => "slurm",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Backend::Local),
            "slurm" => Ok(Backend::Slurm),
            other => Err(format!(
                "`{other}`: unknown backend (expected `local` or `slurm`)"
            )),
        }
    }
}

/// `[<stage>.slurm]`: what one job of the stage asks Slurm for. Unset keys are left to the
/// cluster's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmResources {
    /// `--cpus-per-task`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem`, e.g. `"16G"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// `--gres`, e.g. `"gpu:1"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// `--time`, e.g. `"04:00:00"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--partition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Further `sbatch` arguments, each one `#SBATCH` line (e.g. `"--account=lab"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl SlurmResources {
    /// Problems no type can express, as `(key under <stage>.slurm, message)`.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.cpus == Some(0) {
            problems.push(("cpus".into(), "= 0: expected at least 1".into()));
        }
        let fields = [
            ("mem", &self.mem),
            ("gres", &self.gres),
            ("time", &self.time),
            ("partition", &self.partition),
        ];
        for (key, value) in fields {
            if let Some(v) = value
                && !is_plain(v)
            {
                problems.push((
                    key.into(),
                    format!("= {v:?}: expected one word of letters, digits and `:-_.,/+=`"),
                ));
            }
        }
        for (i, arg) in self.extra_args.iter().enumerate() {
            if !arg.starts_with('-') || arg.contains('\n') {
                problems.push((
                    format!("extra_args[{i}]"),
                    format!(
                        "= {arg:?}: expected one sbatch option on one line, e.g. \"--account=lab\""
                    ),
                ));
            }
        }
        problems
    }

    /// The `#SBATCH` options, one per line's value.
    pub fn sbatch_options(&self) -> Vec<String> {
        let mut options = Vec::new();
        if let Some(cpus) = self.cpus {
            options.push(format!("--cpus-per-task={cpus}"));
        }
        for (flag, value) in [
            ("--mem", &self.mem),
            ("--gres", &self.gres),
            ("--time", &self.time),
            ("--partition", &self.partition),
        ] {
            if let Some(v) = value {
                options.push(format!("{flag}={v}"));
            }
        }
        options.extend(self.extra_args.iter().cloned());
        options
    }
}

/// A value that goes into a batch script unquoted.
fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.,/+=".contains(c))
}
