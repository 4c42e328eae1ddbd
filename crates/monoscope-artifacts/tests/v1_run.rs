//! A run directory written before format versions were recorded (a quickstart run, its large
//! files cut to a few records) still opens, every record reads as its type, and records written
//! back come out byte for byte as that version wrote them.

use std::path::{Path, PathBuf};

use monoscope_artifacts::cluster::{self, ClusterOutputs, ClusterSummary};
use monoscope_artifacts::label::{self, LabelOutputs, Summary};
use monoscope_artifacts::steer::{self, Report, SteerOutputs};
use monoscope_artifacts::train::{self, TrainOutputs};
use monoscope_artifacts::{Run, json, locate_stage};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-run")
}

#[test]
fn a_run_from_before_format_versions_opens_and_finds_each_stage_by_kind() {
    let run = Run::open(&fixture()).unwrap();
    assert_eq!(run.record.format_version, 1);
    assert_eq!(run.record.pipeline, "quickstart");
    let stage = |kinds: &[&str]| run.require(kinds, None, "x").unwrap().id;
    assert_eq!(stage(train::KINDS), "train");
    assert_eq!(stage(&[label::KIND]), "label");
    assert_eq!(stage(&[cluster::KIND]), "cluster");
    assert_eq!(stage(&[steer::KIND]), "steer");
    assert!(run.find(&["no-such-kind"], None, "x").unwrap().is_none());
    let err = run.find(train::KINDS, Some("label"), "an SAE").unwrap_err();
    assert!(
        err.to_string()
            .contains("stage `label` is a `autointerp-label` stage, not an SAE"),
        "{err}"
    );
}

#[test]
fn every_record_of_the_old_run_reads_as_its_type() {
    let dir = fixture();
    let train = TrainOutputs::new(dir.join("train"));
    let eval = train.eval().unwrap().unwrap();
    assert_eq!(eval.feature_frequency.len(), eval.d_sae);
    assert!(eval.splice.is_some());
    assert_eq!(train.metrics().unwrap().len(), 2);

    let labels = LabelOutputs::new(dir.join("label"));
    assert_eq!(labels.labels().unwrap().len(), 3);
    assert_eq!(labels.evidence().unwrap().len(), 2);
    assert_eq!(labels.evidence_of(1).unwrap().unwrap().feature, 1);
    assert_eq!(labels.meta().unwrap().d_sae, 4608);
    assert!(labels.summary().unwrap().is_some());

    let clusters = ClusterOutputs::new(dir.join("cluster"));
    assert_eq!(clusters.neighbours_of(2, false).unwrap().len(), 10);
    assert!(clusters.clusters().unwrap().is_some());
    assert!(clusters.map().unwrap().is_some());
    assert!(clusters.summary().unwrap().is_some());

    let report = SteerOutputs::new(dir.join("steer"))
        .report()
        .unwrap()
        .unwrap();
    assert_eq!(report.experiments.len(), 2);
}

/// Reads `file` as `T` and writes it back with `write`; the bytes must be the file's.
fn round_trip<T: serde::de::DeserializeOwned>(file: &Path, write: impl FnOnce(&Path, &T)) {
    let value: T = json::read(file).unwrap();
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy");
    write(&copy, &value);
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        std::fs::read_to_string(file).unwrap(),
        "{} changed in a round trip",
        file.display()
    );
}

#[test]
fn summaries_and_reports_written_back_are_byte_identical() {
    let dir = fixture();
    round_trip::<ClusterSummary>(&dir.join("cluster/summary.json"), |p, v| {
        json::write_compact(p, v).unwrap()
    });
    round_trip::<Summary>(&dir.join("label/summary.json"), |p, v| {
        json::write_pretty(p, v).unwrap()
    });
    round_trip::<Report>(&dir.join("steer/report.json"), |p, v| {
        json::write_pretty(p, v).unwrap()
    });
}

#[test]
fn a_run_of_a_newer_format_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mut record: serde_json::Value = json::read(&fixture().join("run.json")).unwrap();
    record["format_version"] = 99.into();
    json::write_pretty(&tmp.path().join("run.json"), &record).unwrap();
    let err = Run::open(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("made by a newer version of monoscope (format version 99; this version reads 1 to 1); update monoscope"),
        "{err}"
    );
    record["format_version"] = 0.into();
    json::write_pretty(&tmp.path().join("run.json"), &record).unwrap();
    let err = Run::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("made by an older version"), "{err}");
}

#[test]
fn locate_takes_a_run_or_a_stage_directory_and_names_what_it_is_not() {
    let dir = fixture();
    let what = "labels";
    assert_eq!(
        locate_stage(&dir, &[label::KIND], None, what).unwrap(),
        dir.join("label")
    );
    assert_eq!(
        locate_stage(&dir.join("label"), &[label::KIND], None, what).unwrap(),
        dir.join("label")
    );
    let err = locate_stage(&dir.join("cluster"), &[label::KIND], None, what).unwrap_err();
    assert!(
        err.to_string()
            .contains("a `cluster` stage directory, not one holding labels"),
        "{err}"
    );
    let err = locate_stage(&dir.join("nowhere"), &[label::KIND], None, what).unwrap_err();
    assert!(
        err.to_string().contains(
            "neither a run directory (run.json) nor a completed autointerp-label stage directory"
        ),
        "{err}"
    );
    let err = Run::open(&dir.join("label")).unwrap_err();
    assert!(err.to_string().contains("not a run directory"), "{err}");
}
