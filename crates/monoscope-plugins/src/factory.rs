use std::ffi::c_void;
use std::path::{Path, PathBuf};

use figment::Figment;
use monoscope_core::{
    Artifact, ArtifactKind, CancelToken, ConfigureError, ConfiguredStage, PortSpec, Progress,
    StageContext, StageDescription, StageError, StageFactory,
};
use monoscope_plugin_abi::abi::{
    Bytes, DescribeFn, FreeFn, Host, OwnedBytes, RunFn, Status, ValidateFn,
};
use monoscope_plugin_abi::wire::{
    ArtifactRef, Failure, PluginDescription, RunRequest, RunResult, StageDecl,
};

use crate::isolate::{self, Isolation};

/// A plugin's entry points, resolved once at load time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entrypoints {
    pub describe: DescribeFn,
    pub validate: ValidateFn,
    pub run: RunFn,
    pub free: FreeFn,
}

impl Entrypoints {
    /// Copies a plugin-owned buffer and hands it back to the plugin to free.
    fn take(&self, owned: OwnedBytes) -> Vec<u8> {
        if owned.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the plugin returned `len` initialised bytes at `ptr`.
        let copy = unsafe { std::slice::from_raw_parts(owned.ptr, owned.len) }.to_vec();
        // SAFETY: returned by this plugin, freed exactly once.
        unsafe { (self.free)(owned) };
        copy
    }

    pub fn call_describe(&self) -> Vec<u8> {
        // SAFETY: signature checked by the ABI handshake.
        let owned = unsafe { (self.describe)() };
        self.take(owned)
    }

    /// Runs a stage; `host` must stay valid until this returns.
    pub fn call_run(&self, kind: &str, request: &[u8], host: &Host) -> (i32, Vec<u8>) {
        self.call(|out| {
            // SAFETY: valid buffers and host for the duration of the call; signature checked
            // at load.
            unsafe {
                (self.run)(
                    Bytes::from_slice(kind.as_bytes()),
                    Bytes::from_slice(request),
                    host,
                    out,
                )
            }
        })
    }

    fn call(&self, f: impl FnOnce(*mut OwnedBytes) -> i32) -> (i32, Vec<u8>) {
        let mut out = OwnedBytes::EMPTY;
        let code = f(&mut out);
        (code, self.take(out))
    }
}

/// One plugin stage kind, as the registry sees it.
pub(crate) struct PluginFactory {
    decl: StageDecl,
    entrypoints: Entrypoints,
    /// "name version (path)", for messages.
    origin: String,
    path: PathBuf,
    isolation: Isolation,
}

impl PluginFactory {
    pub fn new(
        decl: StageDecl,
        entrypoints: Entrypoints,
        plugin: &PluginDescription,
        path: &Path,
        isolation: Isolation,
    ) -> Self {
        let origin = format!(
            "plugin {} {} ({})",
            plugin.name,
            plugin.version,
            path.display()
        );
        PluginFactory {
            decl,
            entrypoints,
            origin,
            path: path.to_path_buf(),
            isolation,
        }
    }
}

fn ports(decls: &[monoscope_plugin_abi::wire::PortDecl]) -> Vec<PortSpec> {
    decls
        .iter()
        .map(|p| PortSpec {
            name: p.name.clone().into(),
            ty: monoscope_core::PortType::Artifact(ArtifactKind::new(p.artifact.clone())),
            required: p.required,
            doc: p.doc.clone().into(),
        })
        .collect()
}

impl StageFactory for PluginFactory {
    fn description(&self) -> StageDescription {
        StageDescription {
            kind: self.decl.kind.clone().into(),
            doc: self.decl.doc.clone().into(),
            inputs: ports(&self.decl.inputs),
            outputs: ports(&self.decl.outputs),
        }
    }

    fn schema(&self) -> serde_json::Value {
        self.decl.schema.clone()
    }

    fn configure(&self, params: &Figment) -> Result<ConfiguredStage, ConfigureError> {
        let config: serde_json::Value = params
            .extract()
            .map_err(|e| ConfigureError::Deserialize(Box::new(e)))?;
        let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
        let kind = self.decl.kind.as_bytes();
        let (code, out) = self.entrypoints.call(|out| {
            // SAFETY: valid buffers for the duration of the call; signature checked at load.
            unsafe {
                (self.entrypoints.validate)(
                    Bytes::from_slice(kind),
                    Bytes::from_slice(&config_bytes),
                    out,
                )
            }
        });
        if Status::from_code(code) != Some(Status::Ok) {
            let failure = parse_failure(&out);
            let problems = if failure.problems.is_empty() {
                vec![(
                    String::new(),
                    format!("{}: {}", self.origin, failure.message),
                )]
            } else {
                failure.problems
            };
            return Err(ConfigureError::Invalid(problems));
        }
        let resolved: serde_json::Value = serde_json::from_slice(&out).unwrap_or(config);
        let plugin = Configured {
            decl: self.decl.clone(),
            entrypoints: self.entrypoints,
            origin: self.origin.clone(),
            path: self.path.clone(),
            isolation: self.isolation.clone(),
        };
        let config = resolved.clone();
        Ok(ConfiguredStage::new(resolved, move |ctx| {
            plugin.run(config, ctx)
        }))
    }
}

/// What the host callbacks see.
struct HostState {
    cancel: CancelToken,
    progress: Progress,
    stage: String,
}

extern "C" fn is_cancelled(ctx: *mut c_void) -> bool {
    // SAFETY: `ctx` is the `HostState` that outlives the `run` call it was passed to.
    unsafe { &*(ctx as *const HostState) }.cancel.is_cancelled()
}

extern "C" fn progress(ctx: *mut c_void, position: u64, length: u64) {
    // SAFETY: as above.
    let state = unsafe { &*(ctx as *const HostState) };
    if length > 0 {
        state.progress.set_length(length);
    }
    state.progress.set_position(position);
}

extern "C" fn log(ctx: *mut c_void, level: u32, message: Bytes) {
    // SAFETY: as above; the message buffer is valid for this call.
    let (state, message) = unsafe { (&*(ctx as *const HostState), message.as_slice()) };
    let message = String::from_utf8_lossy(message);
    match level {
        0 => tracing::error!(stage = %state.stage, "{message}"),
        1 => tracing::warn!(stage = %state.stage, "{message}"),
        2 => tracing::info!(stage = %state.stage, "{message}"),
        _ => tracing::debug!(stage = %state.stage, "{message}"),
    }
}

/// What a configured plugin stage needs to run.
struct Configured {
    decl: StageDecl,
    entrypoints: Entrypoints,
    origin: String,
    path: PathBuf,
    isolation: Isolation,
}

impl Configured {
    fn run(&self, config: serde_json::Value, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let mut inputs = std::collections::BTreeMap::new();
        for port in &self.decl.inputs {
            if ctx.has_input(&port.name) {
                let artifact = ctx.recv_artifact(&port.name)?;
                inputs.insert(
                    port.name.clone(),
                    ArtifactRef {
                        kind: artifact.kind.0.to_string(),
                        path: artifact.path,
                        metadata: artifact.metadata,
                    },
                );
            }
        }
        let request = RunRequest {
            config,
            stage_id: ctx.stage_id.to_string(),
            run_dir: ctx.run_dir.to_path_buf(),
            stage_dir: ctx.stage_dir.clone(),
            seed: ctx.seed,
            inputs,
        };
        let returned = match &self.isolation {
            Isolation::None => {
                let request = serde_json::to_vec(&request).map_err(StageError::other)?;
                run_in_process(self.entrypoints, &self.decl.kind, &request, ctx)
            }
            Isolation::Process { timeout } => {
                let child = isolate::ChildRun {
                    plugin: &self.path,
                    kind: &self.decl.kind,
                    origin: &self.origin,
                    timeout: *timeout,
                    request: &request,
                };
                isolate::run_in_child(&child, ctx)?
            }
        };
        self.finish(returned, ctx)
    }

    /// Turns what the plugin returned into the stage's outcome, emitting its outputs.
    fn finish(&self, returned: Returned, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let origin = &self.origin;
        let result = match returned {
            Returned::Ran(result) => result,
            Returned::Failed { code, failure } => {
                return Err(match Status::from_code(code) {
                    Some(Status::Cancelled) => StageError::Cancelled,
                    Some(Status::Panicked) => {
                        StageError::Panicked(format!("{origin}: {}", failure.message))
                    }
                    Some(_) => StageError::Invalid(format!("{origin}: {}", failure.message)),
                    None => StageError::Invalid(format!(
                        "{origin}: returned unknown status code {code}"
                    )),
                });
            }
        };
        for port in &self.decl.outputs {
            match result.outputs.get(&port.name) {
                Some(a) => {
                    let artifact =
                        Artifact::new(ArtifactKind::new(a.kind.clone()), PathBuf::from(&a.path))
                            .with_metadata(a.metadata.clone());
                    ctx.emit_artifact(&port.name, artifact)?;
                }
                None if port.required => {
                    return Err(StageError::Invalid(format!(
                        "{origin}: produced nothing on output `{}`",
                        port.name
                    )));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// What a plugin's `run` entry point came back with, wherever it ran.
#[derive(Debug)]
pub(crate) enum Returned {
    Ran(RunResult),
    /// `code` is the entry point's status code, kept raw so that an unknown one can be named.
    Failed {
        code: i32,
        failure: Failure,
    },
}

impl Returned {
    pub(crate) fn from_call(code: i32, out: &[u8]) -> Returned {
        if Status::from_code(code) != Some(Status::Ok) {
            return Returned::Failed {
                code,
                failure: parse_failure(out),
            };
        }
        match serde_json::from_slice(out) {
            Ok(result) => Returned::Ran(result),
            Err(e) => Returned::Failed {
                code: Status::Error as i32,
                failure: Failure {
                    message: format!("malformed run result: {e}"),
                    problems: Vec::new(),
                },
            },
        }
    }
}

fn run_in_process(
    entrypoints: Entrypoints,
    kind: &str,
    request: &[u8],
    ctx: &StageContext<'_>,
) -> Returned {
    let state = HostState {
        cancel: ctx.cancel.clone(),
        progress: ctx.progress.clone(),
        stage: ctx.stage_id.to_string(),
    };
    let host = Host {
        ctx: &state as *const HostState as *mut c_void,
        is_cancelled,
        progress,
        log,
    };
    let (code, out) = entrypoints.call_run(kind, request, &host);
    Returned::from_call(code, &out)
}

fn parse_failure(bytes: &[u8]) -> Failure {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Failure {
        message: String::from_utf8_lossy(bytes).into_owned(),
        problems: Vec::new(),
    })
}
