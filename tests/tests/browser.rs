//! The feature browser in a real browser: headless Chromium driven by `tests/browser/check.mjs`
//! (playwright-core) over a site built from a synthetic run. Needs `chromium`, `node` and
//! `npm ci --prefix tests/browser`; `.ci/run` installs them and sets
//! `MONOSCOPE_REQUIRE_BROWSER=1`, which turns a missing piece into a failure instead of a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use monoscope_browser::testing::{SCRIPT_TOKEN, write_demo_run};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What is missing to run the browser check, if anything.
fn missing_tools(root: &Path) -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node (apt-get install nodejs npm)".into());
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Some("playwright-core is not installed (npm ci --prefix tests/browser)".into());
    }
    None
}

#[test]
fn the_site_works_in_headless_chromium() {
    let root = workspace_root();
    if let Some(missing) = missing_tools(&root) {
        if std::env::var("MONOSCOPE_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("the browser test cannot run: {missing}");
        }
        eprintln!("skipping the browser test: {missing}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = write_demo_run(dir.path(), 300).unwrap();
    let site = dir.path().join("site");
    monoscope_browser::write_site(&files, &Default::default(), &site).unwrap();
    let shots = root.join("target/browser-test");
    let output = Command::new("node")
        .arg(root.join("tests/browser/check.mjs"))
        .args(["--site".as_ref(), site.as_os_str()])
        .args(["--query", "golden", "--script-feature", "7"])
        .args(["--script-text", SCRIPT_TOKEN])
        // The synthetic run has every analysis: a page that goes missing must fail, not skip.
        .args(["--analyses", "families,coverage,attribution,contrast"])
        .args(["--shots".as_ref(), shots.as_os_str()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
    assert!(shots.join("feature-page.png").is_file());
}
