//! Files a run writes about itself: `resolved.toml`, `run.json` and each stage's completion
//! marker. Their layout is `monoscope_artifacts::run`'s; this module adds the clock.

pub use monoscope_artifacts::run::{
    CompletionMarker, FORMAT_VERSION, MARKER_FILE, RESOLVED_FILE, RUN_FILE, RunRecord, marker_path,
    read_marker,
};

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
