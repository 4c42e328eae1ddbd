//! Kubernetes Jobs for a pipeline (`monoscope export-jobs --k8s`): one Job per stage, an Indexed
//! Job (`completionMode: Indexed`, one index per part) for a stage's parts and a Job for its
//! merge, each pod running `monoscope run-stage` as a Slurm job would, plus `apply.sh`, which
//! applies them in order and waits for each (`kubectl wait`). The pods must see the run
//! directory at the same path (a shared volume: `claim` mounted at `mount`); the stage's
//! `[<stage>.slurm]` `cpus`, `mem` and `gres = "gpu:N"` size them.
//!
//! Generated only: nothing here talks to a cluster.

use std::path::{Path, PathBuf};

use monoscope_config::{Pipeline, StageSpec};
use serde_json::{Value, json};

use crate::executor::{ExecError, io_err, open_run_dir};
use crate::parts::RUN_STAGE_SUBCOMMAND;

/// The folder of the run directory the manifests go to.
pub const K8S_DIR: &str = "k8s";

/// What the pods run and mount.
#[derive(Debug, Clone)]
pub struct K8sOptions {
    /// The container image holding `monoscope`.
    pub image: String,
    /// The `monoscope` executable inside the image.
    pub executable: String,
    /// A PersistentVolumeClaim to mount (none: the image or the nodes provide the path).
    pub claim: Option<String>,
    /// Where the claim is mounted: a directory above the run directory.
    pub mount: PathBuf,
}

/// Writes `resolved.toml` into the run directory, and the manifests and `apply.sh` into its
/// `k8s/`; returns the files written, in the order to apply them.
pub fn export(pipeline: &Pipeline, options: &K8sOptions) -> Result<Vec<PathBuf>, ExecError> {
    let (run_dir, _lock) = open_run_dir(pipeline)?;
    let run_dir = std::path::absolute(&run_dir).map_err(io_err(&run_dir))?;
    let cwd = std::env::current_dir().map_err(io_err(Path::new(".")))?;
    let dir = run_dir.join(K8S_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut written = Vec::new();
    let mut apply = vec![
        "#!/bin/bash".to_string(),
        format!(
            "# Written by `monoscope export-jobs --k8s` for pipeline `{}`: applies each stage's \
             Jobs in order, waiting for each.",
            pipeline.settings.name
        ),
        "set -euo pipefail".to_string(),
        "cd \"$(dirname \"$0\")\"".to_string(),
    ];
    for (n, stage) in pipeline.stages.iter().enumerate() {
        let jobs = match stage.parts {
            1 => vec![("", None)],
            parts => vec![("-parts", Some(parts)), ("-merge", None)],
        };
        for (suffix, parts) in jobs {
            let name = job_name(&pipeline.settings.name, &stage.id, suffix);
            let argument = match (stage.parts, parts) {
                (1, _) => String::new(),
                (_, Some(_)) => " --part \"$JOB_COMPLETION_INDEX\"".into(),
                (_, None) => " --merge".into(),
            };
            let command = format!(
                "exec {} {RUN_STAGE_SUBCOMMAND} {} {}{argument}",
                options.executable,
                run_dir.display(),
                stage.id
            );
            let manifest = job(&name, stage, parts, &command, &cwd, options);
            let file = dir.join(format!("{n:02}-{}{suffix}.json", stage.id));
            let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
            monoscope_core::atomic::write(&file, text.as_bytes()).map_err(io_err(&file))?;
            let file_name = file.file_name().unwrap_or_default().to_string_lossy();
            apply.push(format!("kubectl apply -f {file_name}"));
            apply.push(format!(
                "kubectl wait --for=condition=complete --timeout=-1s job/{name}"
            ));
            written.push(file);
        }
    }
    let script = dir.join("apply.sh");
    monoscope_core::atomic::write(&script, (apply.join("\n") + "\n").as_bytes())
        .map_err(io_err(&script))?;
    written.push(script);
    Ok(written)
}

fn job_name(pipeline: &str, stage: &str, suffix: &str) -> String {
    dns_label(&format!("monoscope-{pipeline}-{stage}{suffix}"))
}

/// A DNS-1123 label: lower-case letters, digits and `-`, at most 63 characters.
fn dns_label(raw: &str) -> String {
    let mut name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

fn job(
    name: &str,
    stage: &StageSpec,
    parts: Option<usize>,
    command: &str,
    cwd: &Path,
    options: &K8sOptions,
) -> Value {
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpus) = stage.slurm.cpus {
        requests.insert("cpu".into(), json!(cpus.to_string()));
    }
    if let Some(mem) = &stage.slurm.mem {
        requests.insert("memory".into(), json!(mem));
    }
    if let Some(gpus) = stage
        .slurm
        .gres
        .as_deref()
        .and_then(|g| g.strip_prefix("gpu:"))
        .and_then(|n| n.rsplit(':').next())
        .and_then(|n| n.parse::<u32>().ok())
    {
        limits.insert("nvidia.com/gpu".into(), json!(gpus));
    }
    let mut container = json!({
        "name": "stage",
        "image": options.image,
        "workingDir": cwd.display().to_string(),
        "command": ["/bin/sh", "-c", command],
        "resources": { "requests": requests, "limits": limits },
    });
    let mut pod = json!({ "restartPolicy": "Never" });
    if let Some(claim) = &options.claim {
        container["volumeMounts"] = json!([{
            "name": "shared",
            "mountPath": options.mount.display().to_string(),
        }]);
        pod["volumes"] = json!([{
            "name": "shared",
            "persistentVolumeClaim": { "claimName": claim },
        }]);
    }
    pod["containers"] = json!([container]);
    let mut spec = json!({
        "backoffLimit": 1,
        "template": {
            "metadata": { "labels": labels(stage) },
            "spec": pod,
        },
    });
    if let Some(parts) = parts {
        spec["completionMode"] = json!("Indexed");
        spec["completions"] = json!(parts);
        spec["parallelism"] = json!(parts);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "labels": labels(stage) },
        "spec": spec,
    })
}

fn labels(stage: &StageSpec) -> Value {
    json!({
        "app.kubernetes.io/name": "monoscope",
        "app.kubernetes.io/component": dns_label(&stage.kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels() {
        assert_eq!(
            job_name("Quick_start", "label", "-parts"),
            "monoscope-quick-start-label-parts"
        );
        let long = job_name(&"p".repeat(80), "s", "");
        assert!(long.len() <= 63 && !long.ends_with('-'));
    }
}
