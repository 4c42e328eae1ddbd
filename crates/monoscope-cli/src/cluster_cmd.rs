//! `monoscope neighbours <run> --feature N`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct NeighboursArgs {
    /// A run directory, or a cluster stage directory.
    pub run: PathBuf,
    #[arg(long)]
    pub feature: u32,
}

pub fn neighbours(args: NeighboursArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("neighbours {}: not implemented yet", args.run.display())
}
