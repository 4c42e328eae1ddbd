//! For Rust plugin authors: implement [`PluginStage`], then one line:
//!
//! ```ignore
//! monoscope_plugin_abi::export_plugin!(name: "my-plugin", version: "0.1.0", stages: [MyStage]);
//! ```
//!
//! in a crate built with `crate-type = ["cdylib"]`. The macro generates every exported symbol
//! of [`crate::abi`]; each entry point catches panics and turns them into [`Status::Panicked`].

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::abi::{Bytes, Host, OwnedBytes, Status};
use crate::wire::{
    ArtifactRef, Failure, PluginDescription, PortDecl, RunRequest, RunResult, StageDecl,
};

/// A stage kind implemented in a plugin.
pub trait PluginStage: 'static {
    /// Deserialised from the stage's table; use `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned + Serialize + schemars::JsonSchema;

    const KIND: &'static str;
    /// One line: what the stage does.
    const DOC: &'static str;

    fn inputs() -> Vec<PortDecl>;
    fn outputs() -> Vec<PortDecl>;

    /// Checks beyond types; `(key, message)` per problem.
    fn validate(_config: &Self::Config) -> Vec<(String, String)> {
        Vec::new()
    }

    fn run(config: Self::Config, ctx: &mut PluginContext<'_>) -> Result<(), String>;
}

/// A port declaration, for [`PluginStage::inputs`] and [`PluginStage::outputs`].
pub fn port(name: &str, artifact: &str, doc: &str) -> PortDecl {
    PortDecl {
        name: name.into(),
        artifact: artifact.into(),
        required: true,
        doc: doc.into(),
    }
}

/// What a running plugin stage sees.
#[derive(Debug)]
pub struct PluginContext<'a> {
    request: &'a RunRequest,
    host: &'a Host,
    outputs: BTreeMap<String, ArtifactRef>,
}

impl PluginContext<'_> {
    pub fn stage_id(&self) -> &str {
        &self.request.stage_id
    }

    pub fn stage_dir(&self) -> &Path {
        &self.request.stage_dir
    }

    pub fn run_dir(&self) -> &Path {
        &self.request.run_dir
    }

    pub fn seed(&self) -> u64 {
        self.request.seed
    }

    /// The artifact on an input port (`None` for an unconnected optional input).
    pub fn input(&self, port: &str) -> Option<&ArtifactRef> {
        self.request.inputs.get(port)
    }

    /// Hands an artifact, already written completely, to an output port.
    pub fn emit(&mut self, port: &str, artifact: ArtifactRef) {
        self.outputs.insert(port.to_string(), artifact);
    }

    pub fn is_cancelled(&self) -> bool {
        (self.host.is_cancelled)(self.host.ctx)
    }

    pub fn progress(&self, position: u64, length: u64) {
        (self.host.progress)(self.host.ctx, position, length);
    }

    pub fn log(&self, message: &str) {
        (self.host.log)(self.host.ctx, 2, Bytes::from_slice(message.as_bytes()));
    }
}

/// An entry point's JSON answer, or why it failed.
pub type Outcome = Result<Vec<u8>, (Status, Failure)>;

/// One stage kind's entry points, type-erased for the generated dispatch.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub kind: &'static str,
    pub declare: fn() -> StageDecl,
    pub validate: fn(&[u8]) -> Outcome,
    pub run: fn(&[u8], &Host) -> Outcome,
}

/// The entry points of a [`PluginStage`].
pub fn entry<S: PluginStage>() -> Entry {
    Entry {
        kind: S::KIND,
        declare: || StageDecl {
            kind: S::KIND.into(),
            doc: S::DOC.into(),
            inputs: S::inputs(),
            outputs: S::outputs(),
            schema: schemars::schema_for!(S::Config).to_value(),
        },
        validate: |config| {
            let config: S::Config = parse_config(config)?;
            let problems = S::validate(&config);
            if !problems.is_empty() {
                let message = format!("{} problem(s) in the config", problems.len());
                return Err((Status::InvalidConfig, Failure { message, problems }));
            }
            serde_json::to_vec(&config).map_err(|e| failure(Status::Error, e.to_string()))
        },
        run: |request, host| {
            let request: RunRequest = serde_json::from_slice(request)
                .map_err(|e| failure(Status::Error, format!("malformed run request: {e}")))?;
            let config: S::Config = serde_json::from_value(request.config.clone())
                .map_err(|e| failure(Status::InvalidConfig, e.to_string()))?;
            let mut ctx = PluginContext {
                request: &request,
                host,
                outputs: BTreeMap::new(),
            };
            match S::run(config, &mut ctx) {
                Ok(()) => serde_json::to_vec(&RunResult {
                    outputs: ctx.outputs,
                })
                .map_err(|e| failure(Status::Error, e.to_string())),
                Err(_) if ctx.is_cancelled() => Err(failure(Status::Cancelled, "cancelled".into())),
                Err(message) => Err(failure(Status::Error, message)),
            }
        },
    }
}

fn parse_config<C: DeserializeOwned>(bytes: &[u8]) -> Result<C, (Status, Failure)> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        (
            Status::InvalidConfig,
            Failure {
                problems: vec![(String::new(), message.clone())],
                message,
            },
        )
    })
}

fn failure(status: Status, message: String) -> (Status, Failure) {
    (
        status,
        Failure {
            message,
            problems: Vec::new(),
        },
    )
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".into())
}

/// Runs `f` with panics caught, writing its output or failure into `out`.
fn guarded(out: *mut OwnedBytes, f: impl FnOnce() -> Result<Vec<u8>, (Status, Failure)>) -> i32 {
    let (status, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(bytes)) => (Status::Ok, bytes),
        Ok(Err((status, failure))) => (status, serde_json::to_vec(&failure).unwrap_or_default()),
        Err(payload) => {
            let failure = Failure {
                message: format!("plugin panicked: {}", panic_text(&*payload)),
                problems: vec![],
            };
            (
                Status::Panicked,
                serde_json::to_vec(&failure).unwrap_or_default(),
            )
        }
    };
    if !out.is_null() {
        // SAFETY: the host passes a valid, writable `OwnedBytes` slot.
        unsafe { out.write(OwnedBytes::from_vec(bytes)) };
    }
    status as i32
}

fn find<'e>(entries: &'e [Entry], kind: &[u8]) -> Result<&'e Entry, (Status, Failure)> {
    let kind = String::from_utf8_lossy(kind);
    entries.iter().find(|e| e.kind == kind).ok_or_else(|| {
        failure(
            Status::Error,
            format!("this plugin has no stage kind `{kind}`"),
        )
    })
}

// The functions below are what `export_plugin!` expands to; they are public for the macro only.

#[doc(hidden)]
pub fn describe(name: &str, version: &str, entries: &[Entry]) -> OwnedBytes {
    let description = catch_unwind(AssertUnwindSafe(|| PluginDescription {
        name: name.into(),
        version: version.into(),
        stages: entries.iter().map(|e| (e.declare)()).collect(),
    }));
    match description {
        Ok(d) => OwnedBytes::from_vec(serde_json::to_vec(&d).unwrap_or_default()),
        Err(_) => OwnedBytes::EMPTY,
    }
}

#[doc(hidden)]
/// # Safety
/// `kind` and `config` must be valid for reads; `out` valid for a write.
pub unsafe fn validate(entries: &[Entry], kind: Bytes, config: Bytes, out: *mut OwnedBytes) -> i32 {
    // SAFETY: the host's buffers are valid for the duration of the call.
    let (kind, config) = unsafe { (kind.as_slice(), config.as_slice()) };
    guarded(out, || (find(entries, kind)?.validate)(config))
}

#[doc(hidden)]
/// # Safety
/// As [`validate`]; `host` must point to a valid [`Host`].
pub unsafe fn run(
    entries: &[Entry],
    kind: Bytes,
    request: Bytes,
    host: *const Host,
    out: *mut OwnedBytes,
) -> i32 {
    // SAFETY: the host's buffers and `Host` are valid for the duration of the call.
    let (kind, request, host) = unsafe { (kind.as_slice(), request.as_slice(), &*host) };
    guarded(out, || (find(entries, kind)?.run)(request, host))
}

#[doc(hidden)]
/// # Safety
/// `bytes` must have been returned by this library and not freed yet.
pub unsafe fn free(bytes: OwnedBytes) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { bytes.into_vec() });
}

/// Exports the plugin's symbols. Use once per plugin crate (a `cdylib`).
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, stages: [$($stage:ty),+ $(,)?]) => {
        fn __monoscope_entries() -> ::std::vec::Vec<$crate::sdk::Entry> {
            ::std::vec![$($crate::sdk::entry::<$stage>()),+]
        }

        #[unsafe(no_mangle)]
        pub static MONOSCOPE_PLUGIN_ABI_VERSION: u32 = $crate::ABI_VERSION;

        #[unsafe(no_mangle)]
        pub extern "C" fn monoscope_plugin_describe() -> $crate::abi::OwnedBytes {
            $crate::sdk::describe($name, $version, &__monoscope_entries())
        }

        /// # Safety
        /// Called by the monoscope host with valid buffers.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn monoscope_plugin_validate(
            kind: $crate::abi::Bytes,
            config: $crate::abi::Bytes,
            out: *mut $crate::abi::OwnedBytes,
        ) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { $crate::sdk::validate(&__monoscope_entries(), kind, config, out) }
        }

        /// # Safety
        /// Called by the monoscope host with valid buffers.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn monoscope_plugin_run(
            kind: $crate::abi::Bytes,
            request: $crate::abi::Bytes,
            host: *const $crate::abi::Host,
            out: *mut $crate::abi::OwnedBytes,
        ) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { $crate::sdk::run(&__monoscope_entries(), kind, request, host, out) }
        }

        /// # Safety
        /// Called by the monoscope host with a buffer this library returned.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn monoscope_plugin_free(bytes: $crate::abi::OwnedBytes) {
            // SAFETY: forwarded from the host.
            unsafe { $crate::sdk::free(bytes) }
        }
    };
}
