//! Project automation, run as `cargo xtask <command>`:
//!
//! - `ci`: formatting, clippy with warnings denied, and the whole test suite, as CI runs them.
//! - `pipeline run <file> [monoscope run flags]`: builds the `monoscope` binary and runs a
//!   pipeline; `pipeline validate <file>` checks one.
//! - `bench <what>`: builds the benchmark binary with optimisations and runs one benchmark.
//! - `tidy`: the architecture invariants the build does not enforce ([`tidy`]).
//! - `gpu-check`: on a GPU machine, the device tests on that GPU, the training and forward
//!   benchmarks on it, and sparsify on the same shapes and GPU ([`gpu_check`]).

mod gpu_check;
mod tidy;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// cargo fmt --check, cargo clippy -D warnings, cargo test: what CI runs.
    Ci,
    /// Pipelines: `run <file> [flags]` or `validate <file>`.
    Pipeline {
        #[command(subcommand)]
        action: PipelineAction,
    },
    /// The architecture invariants of ARCHITECTURE.md that the build does not enforce.
    Tidy,
    /// Benchmarks, built in release mode: `cargo xtask bench <what>` (no argument: list them).
    Bench {
        /// Arguments passed to the benchmark binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// On a GPU machine: the device tests on the GPU, `bench train` and `bench forward` on it,
    /// and sparsify on the same shapes (with `--sparsify-python`).
    GpuCheck(gpu_check::Args),
}

#[derive(Debug, Subcommand)]
enum PipelineAction {
    /// Build `monoscope` and run a pipeline file.
    Run {
        file: PathBuf,
        /// Build with the release profile (slower to build, same code speed for dependencies).
        #[arg(long)]
        release: bool,
        /// Flags for `monoscope run` (`--set k=v`, `--force`, `--run-dir DIR`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Build `monoscope` and validate a pipeline file.
    Validate { file: PathBuf },
}

fn main() -> ExitCode {
    match run(Xtask::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(xtask: Xtask) -> anyhow::Result<ExitCode> {
    match xtask.command {
        Task::Tidy => {
            tidy::run(&workspace_root())?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Ci => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            tidy::run(&workspace_root())?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["test", "--workspace"])?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Pipeline { action } => {
            let (profile, args) = match action {
                PipelineAction::Run {
                    file,
                    release,
                    rest,
                } => {
                    let mut args = vec!["run".to_string(), file.display().to_string()];
                    args.extend(rest);
                    (release, args)
                }
                PipelineAction::Validate { file } => (
                    false,
                    vec!["validate".to_string(), file.display().to_string()],
                ),
            };
            // Not `--quiet`: a first build takes many minutes, and cargo's progress (on stderr)
            // is what tells a newcomer it is not hung.
            let mut command = vec!["run", "--package", "monoscope-cli", "--bin", "monoscope"];
            if profile {
                command.push("--release");
            }
            command.push("--");
            command.extend(args.iter().map(String::as_str));
            passthrough(&command)
        }
        Task::GpuCheck(args) => gpu_check::run(&args),
        Task::Bench { args } => {
            let mut command = vec!["run", "--release", "--package", "monoscope-bench", "--"];
            command.extend(args.iter().map(String::as_str));
            passthrough(&command)
        }
    }
}

pub(crate) fn cargo_command(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command.args(args);
    command
}

/// Runs cargo and fails if it fails.
/// The workspace root: xtask's own directory's parent.
pub(crate) fn workspace_root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map(PathBuf::from).unwrap_or(xtask)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = cargo_command(args).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs cargo and exits with its exit code (a pipeline's 2 for invalid input stays 2).
fn passthrough(args: &[&str]) -> anyhow::Result<ExitCode> {
    let status = cargo_command(args).status().context("running cargo")?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
