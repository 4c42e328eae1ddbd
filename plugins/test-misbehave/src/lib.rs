//! A plugin whose stage misbehaves as its `mode` says, for the process-isolation tests; in
//! `ok` mode it is an ordinary stage whose outputs isolated and in-process runs must agree on.

use monoscope_plugin_abi::sdk::{PluginContext, PluginStage, port};
use monoscope_plugin_abi::wire::{ArtifactRef, PortDecl};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Writes its note and emits it.
    Ok,
    /// `abort()`s the process.
    Abort,
    /// Writes to an unmapped address.
    Segfault,
    /// Writes its process id to `pid` in its stage directory, then never returns, whatever
    /// the host asks.
    Hang,
    /// Writes `escaped.txt` into the run directory, then behaves as `ok`.
    WriteOutside,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// Copied into the note.
    #[serde(default)]
    pub text: String,
}

#[derive(Debug)]
pub struct Misbehaving;

impl PluginStage for Misbehaving {
    type Config = Config;
    const KIND: &'static str = "test-misbehave";
    const DOC: &'static str = "writes a note, or misbehaves as its mode says";
    fn inputs() -> Vec<PortDecl> {
        vec![PortDecl {
            required: false,
            ..port("input", "test-note", "a note, copied into this one")
        }]
    }
    fn outputs() -> Vec<PortDecl> {
        vec![port("note", "test-note", "note.txt")]
    }
    fn run(config: Config, ctx: &mut PluginContext<'_>) -> Result<(), String> {
        match config.mode {
            Mode::Ok | Mode::WriteOutside => {}
            Mode::Abort => std::process::abort(),
            Mode::Segfault => {
                let unmapped = std::ptr::without_provenance_mut::<u8>(8);
                // SAFETY: none; crashing the process is this mode's purpose.
                unsafe { unmapped.write_volatile(1) };
                return Err("the write to an unmapped address did not crash".into());
            }
            Mode::Hang => {
                let pid = ctx.stage_dir().join("pid");
                std::fs::write(&pid, std::process::id().to_string())
                    .map_err(|e| format!("{}: {e}", pid.display()))?;
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
        if matches!(config.mode, Mode::WriteOutside) {
            let escaped = ctx.run_dir().join("escaped.txt");
            std::fs::write(&escaped, "out of bounds")
                .map_err(|e| format!("{}: {e}", escaped.display()))?;
        }
        ctx.progress(1, 2);
        ctx.log(&format!(
            "misbehave: stage {} writes its note",
            ctx.stage_id()
        ));
        let input = match ctx.input("input") {
            Some(a) => std::fs::read_to_string(&a.path)
                .map_err(|e| format!("{}: {e}", a.path.display()))?,
            None => "none\n".into(),
        };
        let note = format!(
            "stage {}, seed {}, text {:?}, input: {input}",
            ctx.stage_id(),
            ctx.seed(),
            config.text
        );
        let path = ctx.stage_dir().join("note.txt");
        std::fs::write(&path, &note).map_err(|e| format!("{}: {e}", path.display()))?;
        ctx.progress(2, 2);
        ctx.emit(
            "note",
            ArtifactRef {
                kind: "test-note".into(),
                path,
                metadata: serde_json::json!({ "bytes": note.len() }),
            },
        );
        Ok(())
    }
}

monoscope_plugin_abi::export_plugin!(name: "test-misbehave", version: "0.1.0", stages: [Misbehaving]);
