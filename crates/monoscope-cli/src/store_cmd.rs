//! `monoscope store info | verify | export | merge`.

use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Model, hooks, shapes, rows, sizes and compression of an activation store.
    Info { dir: PathBuf },
    /// Checksum and decode every shard.
    Verify { dir: PathBuf },
    /// Write rows of one hook to a `.npy` or `.safetensors` file.
    Export {
        dir: PathBuf,
        #[arg(long)]
        hook: String,
        /// `A..B` (rows A to B-1).
        #[arg(long)]
        rows: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Join part stores written with `shard = "i/N"` into one store.
    Merge {
        /// The part stores, in order.
        parts: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_rows(text: &str) -> anyhow::Result<Range<u64>> {
    let (a, b) = text
        .split_once("..")
        .context("--rows: expected `A..B`, e.g. `0..1000`")?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a >= b {
        bail!("--rows {text}: the range is empty");
    }
    Ok(a..b)
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Info { dir } => println!("{}", monoscope_store::info(&dir)?),
        StoreCommand::Verify { dir } => println!("{}", monoscope_store::verify(&dir)?),
        StoreCommand::Export {
            dir,
            hook,
            rows,
            out,
        } => {
            let rows = parse_rows(&rows)?;
            monoscope_store::export(&dir, &hook, rows.clone(), &out)?;
            eprintln!(
                "rows {}..{} of {hook} written to {}",
                rows.start,
                rows.end,
                out.display()
            );
        }
        StoreCommand::Merge { parts, out } => {
            if parts.is_empty() {
                bail!("give the part stores to merge");
            }
            let manifest = monoscope_store::merge(&parts, &out)?;
            eprintln!(
                "{} parts merged into {} ({} rows)",
                parts.len(),
                out.display(),
                manifest.rows
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
