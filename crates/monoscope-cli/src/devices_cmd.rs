//! `monoscope devices`: the backends this build has and whether each one's device answers.

use std::process::ExitCode;

use monoscope_device::{DeviceError, DeviceSpec};

pub fn list(json: bool) -> anyhow::Result<ExitCode> {
    let compiled = monoscope_device::compiled();
    let rows: Vec<(DeviceSpec, &str, String)> = monoscope_device::BACKENDS
        .iter()
        .map(|&spec| {
            let (state, note) = match monoscope_device::open(spec) {
                Ok(_) => ("available", String::new()),
                Err(DeviceError::NotCompiled { backend, .. }) => {
                    ("not built", format!("build with `--features {backend}`"))
                }
                Err(DeviceError::Absent { reason, .. }) => ("absent", reason),
            };
            (spec, state, note)
        })
        .collect();
    if json {
        let devices: Vec<serde_json::Value> = rows
            .iter()
            .map(|(spec, state, note)| {
                serde_json::json!({ "device": spec.to_string(), "state": state, "note": note })
            })
            .collect();
        let out = serde_json::json!({ "compiled": compiled, "devices": devices });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("built with: {}", compiled.join(", "));
    for (spec, state, note) in rows {
        // Backends' reasons can run to several lines; the first says what failed.
        let note = note.lines().next().unwrap_or_default();
        println!("  {:<8} {:<10} {note}", spec.to_string(), state);
    }
    println!(
        "use one with `device = \"NAME\"` in [pipeline] or a stage, `--device NAME` or \
         MONOSCOPE_DEVICE=NAME (cuda:N, rocm:N and wgpu:N pick the N-th device)"
    );
    Ok(ExitCode::SUCCESS)
}
