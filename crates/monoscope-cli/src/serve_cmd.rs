//! `monoscope serve <run>`: serve a run's feature browser on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use monoscope_artifacts::Run;
use monoscope_artifacts::browser::{self, BrowserOutputs};
use monoscope_browser::{RunFiles, site::SiteOptions};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A run directory, or a site directory (with `index.html`).
    pub run: PathBuf,
    /// The browser stage's id, when the run has several.
    #[arg(long)]
    pub stage: Option<String>,
    /// Port on 127.0.0.1 (0: any free port). Requests must name the server as localhost,
    /// 127.x.y.z or [::1], as a guard against DNS rebinding: through an SSH tunnel, open
    /// http://localhost:<port>/.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Rebuild the site from the run's outputs first (into `<run>/site` when the run has no
    /// browser stage).
    #[arg(long)]
    pub rebuild: bool,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let site = match (args.rebuild, find_site(&args.run, args.stage.as_deref())?) {
        (false, Some(site)) => site,
        (_, found) => {
            let out = found.unwrap_or_else(|| args.run.join(browser::SITE_DIR));
            let files = RunFiles::from_run(&args.run)?;
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

/// The site of a run: the directory itself when it is one, else the site of the run's browser
/// stage; `None` when the run has no browser stage.
fn find_site(path: &Path, stage: Option<&str>) -> anyhow::Result<Option<PathBuf>> {
    if monoscope_browser::site::is_site_dir(path) {
        return Ok(Some(path.to_path_buf()));
    }
    let run = Run::open(path)?;
    Ok(run
        .find(&[browser::KIND], stage, "a feature browser")?
        .map(|stage| BrowserOutputs::new(stage.dir).site_dir()))
}
