//! `monoscope serve <run>`: serve a run's feature browser on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use monoscope_browser::{RunFiles, site::SiteOptions};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A run directory, or a site directory (with `index.html`).
    pub run: PathBuf,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Rebuild the site from the run's files first (into `<run>/site` when the run has no
    /// browser stage).
    #[arg(long)]
    pub rebuild: bool,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let site = match (args.rebuild, find_site(&args.run)) {
        (false, Some(site)) => site,
        (_, found) => {
            let out = found.unwrap_or_else(|| args.run.join("site"));
            let files = RunFiles::discover(&args.run)?;
            let summary = monoscope_browser::write_site(&files, &SiteOptions::default(), &out)
                .with_context(|| format!("building the site in {}", out.display()))?;
            eprintln!(
                "built {} ({} features, {} labelled)",
                out.display(),
                summary.features,
                summary.labelled
            );
            out
        }
    };
    let (listener, addr) = monoscope_browser::serve::bind(args.port)?;
    println!(
        "serving {} at http://{addr}/ (Ctrl-C to stop)",
        site.display()
    );
    monoscope_browser::serve(&site, listener)?;
    Ok(ExitCode::SUCCESS)
}

/// The site of a run: the directory itself, or a stage's `site/` subdirectory.
fn find_site(run: &Path) -> Option<PathBuf> {
    if run.join("index.html").is_file() {
        return Some(run.to_path_buf());
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(run)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("site")))
        .filter(|site| site.join("index.html").is_file())
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}
