//! `run`, `validate` and `fetch`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use monoscope_artifacts::browser::{self, BrowserOutputs};
use monoscope_config::{CommandLineOverride, ConfigErrors, Pipeline, parse_override};
use monoscope_core::{CancelToken, Registry};
use monoscope_exec::{ExecError, ProgressMode, RunOptions, StageStatus};
use monoscope_plugins::Isolation;

use crate::{EXIT_CANCELLED, EXIT_INVALID};

/// The built-in stage kinds plus those of the given plugins.
pub fn registry_with_plugins(plugins: &[PathBuf]) -> anyhow::Result<Registry> {
    let mut registry = Registry::builtin();
    for path in plugins {
        monoscope_plugins::load_plugin(path, &mut registry)?;
    }
    Ok(registry)
}

/// Loads a pipeline with the plugins it names (isolated as their entries say) and those given
/// with `--plugin` (in this process).
fn load(
    path: &Path,
    set: &[String],
    run_dir: Option<PathBuf>,
    extra_plugins: &[PathBuf],
) -> anyhow::Result<Result<Pipeline, ConfigErrors>> {
    load_on(path, set, run_dir, None, extra_plugins, false)
}

/// `--device NAME`, or else `MONOSCOPE_DEVICE`, as the override of `pipeline.device` (kept
/// as typed for provenance); a name that is no device is a problem.
fn device_override(device: Option<String>) -> Result<Option<CommandLineOverride>, ConfigErrors> {
    let (name, raw) = match device {
        Some(name) => (name.clone(), format!("--device {name}")),
        None => match std::env::var(DEVICE_ENV) {
            Ok(name) if !name.is_empty() => (name.clone(), format!("{DEVICE_ENV}={name}")),
            _ => return Ok(None),
        },
    };
    match name.parse::<monoscope_device::DeviceSpec>() {
        Ok(spec) => Ok(Some(CommandLineOverride {
            key: "pipeline.device".into(),
            value: toml::Value::String(spec.to_string()),
            raw,
        })),
        Err(e) => Err(monoscope_config::Problem {
            source: raw,
            key: Some("pipeline.device".into()),
            message: format!("= {e}"),
        }
        .into()),
    }
}

/// The variable that sets `pipeline.device` when `--device` is not given.
const DEVICE_ENV: &str = "MONOSCOPE_DEVICE";

/// Whether each stage's device can be used here: present (the local backend computes on this
/// machine), or only built in (the Slurm backend's jobs compute on other machines).
fn check_devices(pipeline: &Pipeline) -> Result<(), ConfigErrors> {
    let local = pipeline.settings.backend == monoscope_config::Backend::Local;
    pipeline.check_devices(|spec| {
        let compiled = monoscope_device::compiled();
        if !local && compiled.contains(&spec.backend()) {
            return Ok(());
        }
        monoscope_device::open(spec).map(drop).map_err(|e| match e {
            monoscope_device::DeviceError::NotCompiled { backend, built, .. } => format!(
                "this build has no `{backend}` backend (it has: {built}); build monoscope with \
                 `--features {backend}` (`monoscope devices` lists what it has)"
            ),
            monoscope_device::DeviceError::Absent { reason, .. } => format!(
                "not present on this machine ({})",
                reason.lines().next().unwrap_or_default()
            ),
        })
    })
}

fn load_on(
    path: &Path,
    set: &[String],
    run_dir: Option<PathBuf>,
    device: Option<String>,
    extra_plugins: &[PathBuf],
    check: bool,
) -> anyhow::Result<Result<Pipeline, ConfigErrors>> {
    let device = match device_override(device) {
        Ok(device) => device,
        Err(errors) => return Ok(Err(errors)),
    };
    let entries = match monoscope_config::plugin_entries(path) {
        Ok(p) => p,
        Err(errors) => return Ok(Err(errors)),
    };
    let mut registry = Registry::builtin();
    for entry in &entries {
        let isolation = match entry.isolation {
            monoscope_config::Isolation::None => Isolation::None,
            monoscope_config::Isolation::Process => Isolation::Process {
                timeout: entry.timeout_s.map(Duration::from_secs),
            },
        };
        monoscope_plugins::load_plugin_with(&entry.path, &isolation, &mut registry)?;
    }
    for plugin in extra_plugins {
        monoscope_plugins::load_plugin(plugin, &mut registry)?;
    }
    let pipeline = load_with(path, set, run_dir, device, &registry);
    Ok(match pipeline {
        Ok(pipeline) if check => check_devices(&pipeline).map(|()| pipeline),
        other => other,
    })
}

fn load_with(
    path: &Path,
    set: &[String],
    run_dir: Option<PathBuf>,
    device: Option<CommandLineOverride>,
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    let mut overrides: Vec<CommandLineOverride> = Vec::new();
    let mut problems = Vec::new();
    for raw in set {
        match parse_override(raw) {
            Ok(o) => overrides.push(o),
            Err(p) => problems.push(p),
        }
    }
    if let Some(dir) = run_dir {
        let raw = format!("pipeline.run_dir={}", dir.display());
        overrides.push(CommandLineOverride {
            key: "pipeline.run_dir".into(),
            value: toml::Value::String(dir.display().to_string()),
            raw,
        });
    }
    // After the `--set`s: `--device` is the more specific request.
    overrides.extend(device);
    if !problems.is_empty() {
        return Err(ConfigErrors { problems });
    }
    monoscope_config::load(path, &overrides, registry)
}

pub fn validate(
    path: &Path,
    set: &[String],
    device: Option<String>,
    plugins: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    match load_on(path, set, None, device, plugins, true)? {
        Ok(pipeline) => {
            print!("{}", pipeline.resolved_toml());
            eprintln!(
                "{}: valid ({} stages)",
                path.display(),
                pipeline.stages.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprint!("{errors}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}

pub fn run(
    path: &Path,
    set: &[String],
    run_dir: Option<PathBuf>,
    force: bool,
    plugins: &[PathBuf],
    backend: Option<String>,
    device: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut set = set.to_vec();
    if let Some(backend) = backend {
        if let Err(e) = backend.parse::<monoscope_config::Backend>() {
            eprintln!("error: --backend {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        set.push(format!("pipeline.backend=\"{backend}\""));
    }
    let mut pipeline = match load_on(path, &set, run_dir, device, plugins, true)? {
        Ok(p) => p,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let cancel = CancelToken::new();
    install_ctrl_c(cancel.clone());
    let options = RunOptions {
        force,
        cancel,
        progress: ProgressMode::Auto,
    };
    match monoscope_exec::run(&mut pipeline, &options) {
        Ok(report) => {
            for stage in &report.stages {
                let what = match stage.status {
                    StageStatus::Skipped => "skipped (complete and unchanged)".to_string(),
                    _ => {
                        let peak = stage.peak_rss_bytes.map_or(String::new(), |b| {
                            format!(", peak RSS {:.2} GiB", b as f64 / (1u64 << 30) as f64)
                        });
                        format!("{:.1} s{peak}", stage.seconds)
                    }
                };
                eprintln!("  {:<16} {:<16} {what}", stage.id, stage.kind);
            }
            eprintln!("run finished: {}", report.run_dir.display());
            print_site_summaries(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(ExecError::Cancelled) => {
            eprintln!("run cancelled; completed stages are kept and will be skipped next time");
            Ok(ExitCode::from(EXIT_CANCELLED))
        }
        Err(e) => Err(e).context(format!("pipeline {}", path.display())),
    }
}

/// `monoscope export-jobs --k8s`.
pub fn export_k8s(
    path: &Path,
    set: &[String],
    run_dir: Option<PathBuf>,
    image: String,
    executable: String,
    claim: Option<String>,
    mount: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let pipeline = match load(path, set, run_dir, &[])? {
        Ok(p) => p,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let run_dir = std::path::absolute(pipeline.run_dir())?;
    let mount = match mount {
        Some(m) => m,
        None => run_dir.parent().unwrap_or(&run_dir).to_path_buf(),
    };
    let options = monoscope_exec::k8s::K8sOptions {
        image,
        executable,
        claim,
        mount,
    };
    for file in monoscope_exec::k8s::export(&pipeline, &options)? {
        println!("{}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One stage, part or merge from a run directory (`monoscope run-stage`).
pub fn run_stage(
    run_dir: &Path,
    stage: &str,
    part: Option<usize>,
    merge: bool,
) -> anyhow::Result<ExitCode> {
    let resolved = run_dir.join(monoscope_exec::record::RESOLVED_FILE);
    if !resolved.exists() {
        anyhow::bail!(
            "{}: not found; `monoscope run-stage` runs a stage of a run directory that \
             `monoscope run` prepared",
            resolved.display()
        );
    }
    let mut pipeline = match load(&resolved, &[], Some(run_dir.to_path_buf()), &[])? {
        Ok(p) => p,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let work = match (part, merge) {
        (Some(i), _) => monoscope_exec::StageWork::Part(i),
        (None, true) => monoscope_exec::StageWork::Merge,
        (None, false) => monoscope_exec::StageWork::Whole,
    };
    let cancel = CancelToken::new();
    // Slurm's scancel and a local parent's stop both send SIGTERM: a clean cancellation.
    let on_signal = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.cancel()) {
        tracing::warn!("cannot install the signal handler: {e}");
    }
    match monoscope_exec::run_stage(&mut pipeline, stage, work, &cancel) {
        Ok(seconds) => {
            eprintln!("{stage} ({work}): complete in {seconds:.1} s");
            Ok(ExitCode::SUCCESS)
        }
        Err(ExecError::Stage {
            source: monoscope_core::StageError::Cancelled,
            ..
        }) => {
            eprintln!("{stage} ({work}): cancelled");
            Ok(ExitCode::from(EXIT_CANCELLED))
        }
        Err(e) => Err(e).context(format!("{} stage {stage}", run_dir.display())),
    }
}

/// Prints what each browser stage wrote for the end of a run (where the site is, the SAE's
/// headline metrics, example features), also when the stage was skipped as complete.
fn print_site_summaries(report: &monoscope_exec::RunReport) {
    for stage in report.stages.iter().filter(|s| s.kind == browser::KIND) {
        let path = BrowserOutputs::new(report.run_dir.join(&stage.id)).summary_path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            println!("{text}");
        }
    }
}

/// First Ctrl-C: cancel cleanly. Second: exit at once.
fn install_ctrl_c(cancel: CancelToken) {
    let result = ctrlc::set_handler(move || {
        if cancel.is_cancelled() {
            eprintln!("\nexiting now");
            std::process::exit(i32::from(EXIT_CANCELLED));
        }
        eprintln!("\ncancelling (press Ctrl-C again to exit at once)");
        cancel.cancel();
    });
    if let Err(e) = result {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

/// The child's side of a process-isolated plugin stage (`isolation = "process"`).
pub fn plugin_host(plugin: &Path, kind: &str) -> anyhow::Result<ExitCode> {
    let cancel = CancelToken::new();
    // The host asks for a stop with SIGTERM; the plugin sees it as a cancellation.
    let on_signal = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.cancel()) {
        tracing::warn!("cannot install the signal handler: {e}");
    }
    monoscope_plugins::serve_child(plugin, kind, &cancel)?;
    Ok(ExitCode::SUCCESS)
}

pub fn fetch(names: &[String]) -> anyhow::Result<ExitCode> {
    if names.is_empty() {
        println!("cache: {}", monoscope_fetch::cache_dir().display());
        for asset in monoscope_fetch::ASSETS {
            println!(
                "  {:<12} {:?}  {}  ({})",
                asset.name, asset.kind, asset.description, asset.requirement
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    for name in names {
        let Some(asset) = monoscope_fetch::find_asset(name) else {
            let known: Vec<&str> = monoscope_fetch::ASSETS.iter().map(|a| a.name).collect();
            eprintln!(
                "error: unknown asset `{name}` (known: {})",
                known.join(", ")
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        };
        let path = monoscope_fetch::fetch(asset).with_context(|| format!("fetching {name}"))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
