//! `monoscope steer` and `monoscope features --text`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// A run directory or a SAE directory.
    pub run: PathBuf,
    #[arg(long)]
    pub text: String,
}

#[derive(Debug, clap::Args)]
pub struct SteerArgs {
    /// A run directory or a SAE directory.
    pub run: PathBuf,
}

pub fn features(args: FeaturesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("features {}: not implemented yet", args.run.display())
}

pub fn steer(args: SteerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("steer {}: not implemented yet", args.run.display())
}
