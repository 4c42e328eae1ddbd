//! `monoscope labels show <run> --feature N`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// A feature's label, scores and top contexts with the firing tokens highlighted.
    Show {
        /// A run directory, or an autointerp-label stage directory.
        run: PathBuf,
        #[arg(long)]
        feature: u32,
    },
}

pub fn run(command: LabelsCommand) -> anyhow::Result<ExitCode> {
    let LabelsCommand::Show { run, feature } = command;
    anyhow::bail!("labels show {} --feature {feature}: not implemented yet", run.display())
}
