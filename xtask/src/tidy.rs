//! `cargo xtask tidy`: the architecture invariants of ARCHITECTURE.md that the build itself does
//! not enforce, checked against `cargo metadata` and the sources.
//!
//! - `monoscope-core` depends on no tensor library and no monoscope crate but
//!   `monoscope-artifacts`, which depends on nothing but serde, serde_json, schemars and
//!   thiserror;
//! - no crate but `monoscope-artifacts` names a stage's output file: no string literal in any
//!   other package's `src/` is one of the file names the artifacts crate declares (its
//!   `pub const …: &str = "<name>.<ext>"`);
//! - `monoscope-formats` knows nothing of burn;
//! - `anyhow` only in binaries: no package with a library target depends on it;
//! - every crate that registers built-in stages (`register_stage!`) is named by the `monoscope`
//!   binary (`use <crate> as _;`), or the linker drops its registrations and its stage kinds
//!   are silently missing;
//! - test support (`pub mod testing;`) is compiled only with the crate's `testing` feature, so
//!   it never ships in a binary;
//! - only `monoscope-device` opens a GPU device (`Device::cuda(`, `Device::wgpu(`, …): every
//!   other crate gets its device from a `device` setting through it, so that a name, the
//!   cargo feature it needs and the check that the device answers stay in one place.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// Runs every check; fails listing each violation.
pub fn run(workspace: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let packages = packages(&metadata);
    let cli_sources = sources_of(&workspace.join("crates/monoscope-cli/src"))?;
    let mut problems = check_dependencies(&packages);
    let artifacts_dir = workspace.join("crates/monoscope-artifacts/src");
    let file_names = declared_file_names(&sources_of(&artifacts_dir)?);
    if file_names.is_empty() {
        problems.push(format!(
            "{}: no output file names declared (`pub const …: &str = \"name.ext\";`)",
            artifacts_dir.display()
        ));
    }
    for p in packages.iter().filter(|p| p.name != ARTIFACTS) {
        for (path, text) in sources_of(&p.dir.join("src"))? {
            problems.extend(check_file_names_not_named(&path, &text, &file_names));
            if p.name != DEVICES && p.name != "xtask" {
                problems.extend(check_no_gpu_device_opened(&path, &text));
            }
        }
    }
    // Stage crates are libraries; core defines the macro.
    for p in packages
        .iter()
        .filter(|p| p.has_lib && p.name != "monoscope-core")
    {
        let registers = sources_of(&p.dir.join("src"))?.iter().any(|(_, text)| {
            text.lines()
                .any(|l| l.trim_start().starts_with("register_stage!("))
        });
        if registers {
            problems.extend(check_named_by_cli(p, &cli_sources));
        }
        if let Ok(lib) = std::fs::read_to_string(p.dir.join("src/lib.rs")) {
            problems.extend(check_testing_gated(&p.name, &lib));
        }
    }
    if problems.is_empty() {
        eprintln!("tidy: {} packages, every invariant holds", packages.len());
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("{} architecture invariant(s) broken", problems.len())
}

/// What the checks need of one workspace package.
#[derive(Debug)]
struct Package {
    name: String,
    dir: PathBuf,
    has_lib: bool,
    /// Normal (not dev, not build) dependencies.
    dependencies: Vec<String>,
}

fn packages(metadata: &Value) -> Vec<Package> {
    let list = metadata["packages"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|p| {
            let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let manifest = PathBuf::from(str_of(&p["manifest_path"]));
            let has_lib = p["targets"].as_array().into_iter().flatten().any(|t| {
                t["kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k == "lib" || k == "rlib")
            });
            let dependencies = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .map(|d| str_of(&d["name"]))
                .collect();
            Package {
                name: str_of(&p["name"]),
                dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
                has_lib,
                dependencies,
            }
        })
        .collect()
}

const TENSOR_LIBRARIES: &[&str] = &["burn", "gemm", "ndarray", "candle", "tch"];
const ARTIFACTS: &str = "monoscope-artifacts";
/// Everything `monoscope-artifacts` may depend on: it is the bottom of the workspace.
const ARTIFACTS_DEPENDENCIES: &[&str] = &["serde", "serde_json", "schemars", "thiserror"];

fn check_dependencies(packages: &[Package]) -> Vec<String> {
    let mut problems = Vec::new();
    let is_tensor = |d: &str| {
        TENSOR_LIBRARIES
            .iter()
            .any(|t| d == *t || d.starts_with(&format!("{t}-")))
    };
    for p in packages {
        for d in &p.dependencies {
            if p.name == "monoscope-core"
                && (is_tensor(d) || (d.starts_with("monoscope-") && d != ARTIFACTS))
            {
                problems.push(format!(
                    "monoscope-core depends on `{d}`: core depends on no tensor library and no \
                     monoscope crate but {ARTIFACTS}"
                ));
            }
            if p.name == ARTIFACTS && !ARTIFACTS_DEPENDENCIES.contains(&d.as_str()) {
                problems.push(format!(
                    "{ARTIFACTS} depends on `{d}`: it depends only on {}",
                    ARTIFACTS_DEPENDENCIES.join(", ")
                ));
            }
            if p.name == "monoscope-formats" && (d == "burn" || d.starts_with("burn-")) {
                problems.push(format!(
                    "monoscope-formats depends on `{d}`: formats knows nothing of burn"
                ));
            }
            if p.has_lib && d == "anyhow" {
                problems.push(format!(
                    "{} has a library target and depends on anyhow: libraries use thiserror, \
                     anyhow only in binaries",
                    p.name
                ));
            }
        }
    }
    problems
}

/// The crate that owns device names and opens devices.
const DEVICES: &str = "monoscope-device";
/// burn's constructors of devices other than the CPU's.
const GPU_DEVICE_CONSTRUCTORS: &[&str] = &[
    "Device::cuda(",
    "Device::rocm(",
    "Device::wgpu(",
    "Device::vulkan(",
    "Device::metal(",
    "Device::cpu(",
];

fn check_no_gpu_device_opened(path: &Path, text: &str) -> Vec<String> {
    GPU_DEVICE_CONSTRUCTORS
        .iter()
        .filter(|c| text.contains(*c))
        .map(|c| {
            format!(
                "{}: calls `{c}…)`: devices are opened only by {DEVICES} (`monoscope_device::open`)",
                path.display()
            )
        })
        .collect()
}

fn check_named_by_cli(p: &Package, cli_sources: &[(PathBuf, String)]) -> Vec<String> {
    let lib = p.name.replace('-', "_");
    let named = cli_sources
        .iter()
        .any(|(_, text)| text.contains(&format!("use {lib} as _;")));
    if named {
        Vec::new()
    } else {
        vec![format!(
            "{} registers stages but crates/monoscope-cli never says `use {lib} as _;`: its \
             stage kinds would be missing from the binary",
            p.name
        )]
    }
}

/// `pub mod testing;` must sit right under `#[cfg(feature = "testing")]`.
fn check_testing_gated(name: &str, lib: &str) -> Option<String> {
    let lines: Vec<&str> = lib.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| *l == "pub mod testing;")?;
    let gated = at > 0 && lines[at - 1] == "#[cfg(feature = \"testing\")]";
    (!gated).then(|| {
        format!(
            "{name}: `pub mod testing;` is not behind `#[cfg(feature = \"testing\")]`: test \
             support would ship in production builds"
        )
    })
}

/// The values of `pub const NAME: &str = "…";` that look like file names (`name.ext`).
fn declared_file_names(sources: &[(PathBuf, String)]) -> Vec<String> {
    let mut names: Vec<String> = sources
        .iter()
        .flat_map(|(_, text)| text.lines())
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (_, value) = rest.split_once(": &str = \"")?;
            let value = value.strip_suffix("\";")?;
            value.contains('.').then(|| value.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A string literal that is exactly one of `names` (file names of stage outputs), outside
/// comments and the unit tests at the end of a file.
fn check_file_names_not_named(path: &Path, text: &str, names: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code == "#[cfg(test)]" {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for name in names {
            if line.contains(&format!("\"{name}\"")) {
                problems.push(format!(
                    "{}:{}: names `{name}`, a stage's output file: read and write it through \
                     {ARTIFACTS}",
                    path.display(),
                    number + 1
                ));
            }
        }
    }
    problems
}

/// Every `.rs` file under `dir`, with its text.
fn sources_of(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            out.extend(sources_of(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((path, text));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, has_lib: bool, deps: &[&str]) -> Package {
        Package {
            name: name.into(),
            dir: PathBuf::new(),
            has_lib,
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        let problems = check_dependencies(&[
            package(
                "monoscope-core",
                true,
                &["serde", "burn", "monoscope-store"],
            ),
            package("monoscope-formats", true, &["burn-flex", "half"]),
            package("monoscope-sae", true, &["anyhow", "gemm"]),
            package("monoscope-cli", false, &["anyhow", "burn"]),
        ]);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("monoscope-core depends on `burn`"));
        assert!(problems[1].contains("`monoscope-store`"));
        assert!(problems[2].contains("formats depends on `burn-flex`"));
        assert!(problems[3].contains("monoscope-sae has a library target"));
        let fine = check_dependencies(&[
            package("monoscope-core", true, &["serde", "monoscope-artifacts"]),
            package("monoscope-artifacts", true, &["serde", "thiserror"]),
        ]);
        assert!(fine.is_empty(), "{fine:#?}");
        let heavy = check_dependencies(&[package("monoscope-artifacts", true, &["zstd"])]);
        assert!(
            heavy[0].contains("monoscope-artifacts depends on `zstd`"),
            "{heavy:?}"
        );
    }

    #[test]
    fn an_output_file_named_outside_the_artifacts_crate_is_reported() {
        let declared = declared_file_names(&[(
            PathBuf::from("label.rs"),
            "pub const LABELS_FILE: &str = \"labels.jsonl\";\npub const KIND: &str = \"autointerp-label\";\n"
                .to_string(),
        )]);
        assert_eq!(declared, ["labels.jsonl"]);
        let source = "// reads \"labels.jsonl\"\nlet p = dir.join(\"labels.jsonl\");\n#[cfg(test)]\nmod tests { \"labels.jsonl\" }\n";
        let problems = check_file_names_not_named(Path::new("x.rs"), source, &declared);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("x.rs:2: names `labels.jsonl`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_gpu_device_opened_outside_the_device_crate_is_reported() {
        let path = Path::new("crates/x/src/lib.rs");
        let problems = check_no_gpu_device_opened(path, "let d = Device::cuda(0);");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("Device::cuda(") && problems[0].contains(DEVICES));
        assert!(check_no_gpu_device_opened(path, "let d = Device::flex();").is_empty());
    }

    #[test]
    fn a_stage_crate_the_binary_does_not_name_is_reported() {
        let cli = vec![(
            PathBuf::from("main.rs"),
            "use monoscope_train as _;\n".to_string(),
        )];
        assert!(check_named_by_cli(&package("monoscope-train", true, &[]), &cli).is_empty());
        let missing = check_named_by_cli(&package("monoscope-label", true, &[]), &cli);
        assert!(
            missing[0].contains("use monoscope_label as _;"),
            "{missing:?}"
        );
    }

    #[test]
    fn test_support_must_be_behind_the_testing_feature() {
        let gated = "mod a;\n#[cfg(feature = \"testing\")]\npub mod testing;\n";
        assert_eq!(check_testing_gated("x", gated), None);
        assert_eq!(check_testing_gated("x", "mod a;\n"), None);
        let open = check_testing_gated("x", "mod a;\npub mod testing;\n").unwrap();
        assert!(open.contains("x: `pub mod testing;`"), "{open}");
    }

    #[test]
    fn packages_are_read_from_cargo_metadata() {
        let metadata = serde_json::json!({"packages": [{
            "name": "monoscope-x", "manifest_path": "/w/crates/x/Cargo.toml",
            "targets": [{"kind": ["lib"]}, {"kind": ["test"]}],
            "dependencies": [{"name": "serde", "kind": null}, {"name": "tempfile", "kind": "dev"}]
        }]});
        let p = &packages(&metadata)[0];
        assert!(p.has_lib);
        assert_eq!(p.dependencies, ["serde"]);
        assert_eq!(p.dir, PathBuf::from("/w/crates/x"));
    }
}
