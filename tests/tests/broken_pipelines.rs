//! Every file in `tests/pipelines/broken/` is rejected before anything runs, with a message
//! naming the file, the key, the offending value and what was expected. The messages are
//! snapshots: a change in wording shows up in review.

mod common;

use std::path::Path;

use monoscope_config::{load_with_env, parse_override};
use monoscope_core::Registry;

fn errors(name: &str) -> String {
    let path = Path::new("pipelines/broken").join(name);
    assert!(
        path.exists() || name == "does_not_exist.toml",
        "missing fixture {name}"
    );
    match load_with_env(&path, &[], &Registry::builtin(), false) {
        Ok(_) => panic!("{name} was accepted"),
        Err(errors) => errors.to_string(),
    }
}

macro_rules! broken {
    ($($test:ident => $file:literal,)*) => {$(
        #[test]
        fn $test() {
            insta::assert_snapshot!(stringify!($test), errors($file));
        }
    )*};
}

broken! {
    unknown_kind => "unknown_kind.toml",
    unknown_key => "unknown_key.toml",
    wrong_type => "wrong_type.toml",
    wrong_type_deep_in_a_table => "wrong_type_deep.toml",
    missing_required_key => "missing_required_key.toml",
    missing_input => "missing_input.toml",
    mistyped_input => "mistyped_input.toml",
    unknown_input_stage => "unknown_input_stage.toml",
    duplicate_stage_id => "duplicate_stage_id.toml",
    cycle => "cycle.toml",
    syntax_error => "syntax_error.toml",
    empty_file => "empty.toml",
    binary_file => "binary.toml",
    missing_pipeline_table => "missing_pipeline_table.toml",
    missing_kind => "missing_kind.toml",
    unknown_pipeline_key => "unknown_pipeline_key.toml",
    input_and_inputs => "input_and_inputs.toml",
    unknown_input_port => "unknown_input_port.toml",
    zero_capacity => "zero_capacity.toml",
    parts_where_none_can_run => "parts_where_none_can_run.toml",
    slurm_settings => "slurm_settings.toml",
    a_stream_between_slurm_jobs => "slurm_stream.toml",
    unknown_backend => "unknown_backend.toml",
    unknown_device => "unknown_device.toml",
    several_problems_are_all_reported => "several_problems.toml",
    missing_file => "does_not_exist.toml",
}

#[test]
fn a_bad_override_names_the_argument() {
    let err = parse_override("train.lr").unwrap_err().to_string();
    insta::assert_snapshot!(err);
    let err = parse_override("lr=3").unwrap_err().to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn a_wrong_type_from_the_command_line_names_the_override() {
    let path = Path::new("pipelines/broken/../../pipelines/ok.toml");
    let set = [parse_override("src.count=\"many\"").unwrap()];
    let err = load_with_env(path, &set, &Registry::builtin(), false)
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!(err);
}
