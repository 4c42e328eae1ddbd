//! `monoscope serve <run>`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A run directory (its browser site) or a site directory.
    pub run: PathBuf,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("serve {}: not implemented yet", args.run.display())
}
