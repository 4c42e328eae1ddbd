//! Every pipeline in `pipelines/` validates against the stage kinds the binary ships.

use std::path::Path;

use monoscope_config::load_with_env;
use monoscope_core::Registry;
// The stage crates the `monoscope` binary links, so their kinds are registered here too.
use monoscope_analyses as _;
use monoscope_browser as _;
use monoscope_capture as _;
use monoscope_cluster as _;
use monoscope_fetch as _;
use monoscope_label as _;
use monoscope_steer as _;
use monoscope_train as _;

#[test]
fn every_shipped_pipeline_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Files a stage reads (the steer stage's contrast texts) are named relative to the working
    // directory, which for the shipped pipelines is the repository's root.
    std::env::set_current_dir(&root).unwrap();
    let dir = root.join("pipelines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = load_with_env(&path, &[], &Registry::builtin(), false) {
                panic!("{e}");
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "expected the shipped pipelines in {}",
        dir.display()
    );
}
