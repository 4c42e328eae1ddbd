//! `monoscope`: the command line over the monoscope library crates.

mod analyses_cmd;
mod cluster_cmd;
mod compute_args;
mod devices_cmd;
mod labels_cmd;
mod model_cmd;
mod pipeline_cmds;
mod sae_cmd;
mod serve_cmd;
mod stages_cmd;
mod steer_cmd;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Built-in stages register themselves at link time; naming each stage crate here keeps the
// linker from dropping a crate whose only use is its registrations.
use monoscope_analyses as _;
use monoscope_browser as _;
use monoscope_capture as _;
use monoscope_cluster as _;
use monoscope_fetch as _;
use monoscope_label as _;
use monoscope_steer as _;
use monoscope_train as _;

/// Exit code for invalid input (a bad pipeline file, override or argument).
const EXIT_INVALID: u8 = 2;
/// Exit code for a run stopped by Ctrl-C.
const EXIT_CANCELLED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "monoscope",
    version,
    about = "Sparse-autoencoder interpretability for language models: capture, train, label, cluster, steer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline file (or a run's resolved.toml, to reproduce it).
    Run {
        pipeline: PathBuf,
        /// Override a value: `stage.key=value` (TOML syntax for the value). Repeatable.
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        set: Vec<String>,
        /// Write the run here instead of the pipeline's `run_dir`.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Rerun every stage, even those whose outputs are complete and unchanged.
        #[arg(long)]
        force: bool,
        /// Load a stage plugin (a dylib) besides those the pipeline names. Repeatable.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
        /// Where stages and their parts run: `local` or `slurm` (sets `pipeline.backend`).
        #[arg(long)]
        backend: Option<String>,
        /// The device stages compute on unless a stage names its own: `cpu`, `cuda`,
        /// `cuda:N`, `wgpu`, … (sets `pipeline.device`; default: `MONOSCOPE_DEVICE`).
        #[arg(long)]
        device: Option<String>,
    },
    /// Run one stage of a run directory, one of its parts or its merge, from the run's
    /// resolved.toml and its upstream stages' outputs: what each part's process and each
    /// cluster job runs.
    RunStage {
        /// The run directory (holding resolved.toml).
        run_dir: PathBuf,
        /// The stage's id.
        stage: String,
        /// Run part I of a stage with `parts = N` (0 <= I < N).
        #[arg(long, conflicts_with = "merge")]
        part: Option<usize>,
        /// Join the finished parts of a stage with `parts = N`.
        #[arg(long)]
        merge: bool,
    },
    /// Write a pipeline's stages as cluster jobs to submit yourself: `--k8s`, Kubernetes Jobs
    /// (an Indexed Job per stage's parts) and apply.sh, into the run directory's k8s/.
    ExportJobs {
        pipeline: PathBuf,
        /// Kubernetes Job manifests (the one format so far).
        #[arg(long, required = true)]
        k8s: bool,
        /// The container image holding `monoscope`.
        #[arg(long)]
        image: String,
        /// The `monoscope` executable inside the image.
        #[arg(long, default_value = "monoscope")]
        executable: String,
        /// A PersistentVolumeClaim that holds the run directory, mounted in every pod.
        #[arg(long)]
        claim: Option<String>,
        /// Where the claim is mounted (default: the run directory's parent).
        #[arg(long)]
        mount: Option<PathBuf>,
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Check a pipeline file without running it; prints the resolved configuration.
    Validate {
        pipeline: PathBuf,
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        set: Vec<String>,
        /// As `run --device`: the device is checked here too.
        #[arg(long)]
        device: Option<String>,
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// List every stage kind with its ports and parameters.
    Stages {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also list the stage kinds of these plugins. Repeatable.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// The compute devices this build has (cargo features) and whether each is present here.
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a known model or corpus into the cache (no name: list them).
    Fetch { names: Vec<String> },
    /// Inspect and run a language model (a GGUF file, a Hugging Face directory or a known name).
    Model {
        #[command(subcommand)]
        command: model_cmd::ModelCommand,
    },
    /// Inspect sparse autoencoders.
    Sae {
        #[command(subcommand)]
        command: sae_cmd::SaeCommand,
    },
    /// Inspect, verify, export and merge activation stores.
    Store {
        #[command(subcommand)]
        command: store_cmd::StoreCommand,
    },
    /// Show the labels, scores and evidence of an autointerp-label stage.
    Labels {
        #[command(subcommand)]
        command: labels_cmd::LabelsCommand,
    },
    /// Print a feature's nearest neighbours (cosine of decoder directions) with their labels.
    Neighbours(cluster_cmd::NeighboursArgs),
    /// The features that fire most on a text, with their activations and labels.
    Features(steer_cmd::FeaturesArgs),
    /// Generate with and without clamping, adding or ablating features, side by side.
    Steer(steer_cmd::SteerArgs),
    /// Which features a target's log-probability rests on: each feature's attribution at each
    /// position by a backward pass (SAE error term kept), beside the real effect of ablating it.
    Attribute(steer_cmd::AttributeArgs),
    /// How features split across a sweep's SAE sizes: a summary, or one feature's descendants.
    Split(analyses_cmd::SplitArgs),
    /// Which concepts each SAE size has a specific feature for, against concept frequency.
    Coverage(analyses_cmd::CoverageArgs),
    /// Serve a run's feature browser on 127.0.0.1.
    Serve(serve_cmd::ServeArgs),
    /// Runs one stage of a plugin with `isolation = "process"` for the `monoscope run` that
    /// started it: a run request on stdin, JSON lines on stdout. Not for use by hand.
    #[command(name = monoscope_plugins::isolate::HOST_SUBCOMMAND, hide = true)]
    PluginHost { plugin: PathBuf, kind: String },
}

fn main() -> ExitCode {
    monoscope_core::retain_freed_memory();
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            pipeline,
            set,
            run_dir,
            force,
            plugins,
            backend,
            device,
        } => pipeline_cmds::run(&pipeline, &set, run_dir, force, &plugins, backend, device),
        Command::ExportJobs {
            pipeline,
            k8s: _,
            image,
            executable,
            claim,
            mount,
            set,
            run_dir,
        } => pipeline_cmds::export_k8s(&pipeline, &set, run_dir, image, executable, claim, mount),
        Command::RunStage {
            run_dir,
            stage,
            part,
            merge,
        } => pipeline_cmds::run_stage(&run_dir, &stage, part, merge),
        Command::Validate {
            pipeline,
            set,
            device,
            plugins,
        } => pipeline_cmds::validate(&pipeline, &set, device, &plugins),
        Command::Devices { json } => devices_cmd::list(json),
        Command::Stages { json, plugins } => stages_cmd::list(json, &plugins),
        Command::Fetch { names } => pipeline_cmds::fetch(&names),
        Command::Model { command } => model_cmd::run(command),
        Command::Store { command } => store_cmd::run(command),
        Command::Sae { command } => sae_cmd::run(command),
        Command::Labels { command } => labels_cmd::run(command),
        Command::Neighbours(args) => cluster_cmd::neighbours(args),
        Command::Features(args) => steer_cmd::features(args),
        Command::Steer(args) => steer_cmd::steer(args),
        Command::Attribute(args) => steer_cmd::attribute(args),
        Command::Split(args) => analyses_cmd::split(args),
        Command::Coverage(args) => analyses_cmd::coverage(args),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::PluginHost { plugin, kind } => pipeline_cmds::plugin_host(&plugin, &kind),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", monoscope_exec::error_chain(error.as_ref()));
            // A checkpoint that cannot be read as it says (a setting monoscope does not
            // implement, a missing tensor) is bad input, as with clap's usage errors.
            // So is a file given as a plugin that is not one.
            let bad_input = error.chain().any(|e| {
                e.downcast_ref::<monoscope_formats::FormatError>().is_some()
                    || e.downcast_ref::<monoscope_plugins::PluginError>().is_some()
                    || matches!(
                        e.downcast_ref::<monoscope_lm::LmError>(),
                        Some(monoscope_lm::LmError::Format(_))
                    )
            });
            if bad_input {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MONOSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
