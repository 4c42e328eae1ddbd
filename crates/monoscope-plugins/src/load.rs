use std::path::{Path, PathBuf};
use std::sync::Arc;

use libloading::Library;
use monoscope_core::{Registry, StageOrigin};
use monoscope_plugin_abi::abi::{self, DescribeFn, FreeFn, RunFn, ValidateFn};
use monoscope_plugin_abi::wire::PluginDescription;

use crate::factory::{Entrypoints, PluginFactory};
use crate::isolate::Isolation;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {}: no such file", path.display())]
    NotFound { path: PathBuf },
    #[error("plugin {}: not a dynamic library ({reason})", path.display())]
    NotALibrary { path: PathBuf, reason: String },
    #[error("plugin {}: not a monoscope plugin: it does not export `{symbol}`", path.display())]
    MissingSymbol { path: PathBuf, symbol: String },
    #[error(
        "plugin {}: built for plugin ABI version {found}, but this monoscope speaks version \
         {expected}; rebuild the plugin against monoscope-plugin-abi {expected}", path.display()
    )]
    WrongAbi {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plugin {}: its self-description is unusable: {reason}", path.display())]
    BadDescription { path: PathBuf, reason: String },
    #[error("plugin {}: {source}", path.display())]
    Collision {
        path: PathBuf,
        #[source]
        source: monoscope_core::RegistryError,
    },
    /// In the child process of an isolated run: talking to the host failed.
    #[error("isolated plugin process: {what}: {source}")]
    Child {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A plugin that was loaded and registered.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub kinds: Vec<String>,
}

/// Loads the dylib at `path` and registers its stage kinds in `registry`; its stages run in
/// this process.
pub fn load_plugin(path: &Path, registry: &mut Registry) -> Result<LoadedPlugin, PluginError> {
    load_plugin_with(path, &Isolation::None, registry)
}

/// As [`load_plugin`], with the plugin's stages run as `isolation` says. Describing the plugin
/// and validating its stages' configs happen in this process either way.
pub fn load_plugin_with(
    path: &Path,
    isolation: &Isolation,
    registry: &mut Registry,
) -> Result<LoadedPlugin, PluginError> {
    let path_buf = path.to_path_buf();
    let (entrypoints, description) = open(path)?;
    let origin = StageOrigin::Plugin {
        path: path_buf.clone(),
        name: description.name.clone(),
        version: description.version.clone(),
    };
    let mut kinds = Vec::new();
    for decl in &description.stages {
        let factory = PluginFactory::new(
            decl.clone(),
            entrypoints,
            &description,
            &path_buf,
            isolation.clone(),
        );
        registry
            .register(Arc::new(factory), origin.clone())
            .map_err(|source| PluginError::Collision {
                path: path_buf.clone(),
                source,
            })?;
        kinds.push(decl.kind.clone());
    }
    tracing::debug!(plugin = %description.name, version = %description.version, ?kinds, ?isolation, "plugin loaded");
    Ok(LoadedPlugin {
        path: path_buf,
        name: description.name,
        version: description.version,
        kinds,
    })
}

/// Checks and loads the library and asks it to describe itself: everything short of
/// registering its kinds.
pub(crate) fn open(path: &Path) -> Result<(Entrypoints, PluginDescription), PluginError> {
    let path_buf = path.to_path_buf();
    check_header(path)?;
    // SAFETY: loading a library runs its initialisers. That is inherent to plugins; the header
    // check above keeps arbitrary files out, and the ABI check below happens before any of the
    // plugin's own entry points is called.
    let library = unsafe { Library::new(path) }.map_err(|e| PluginError::NotALibrary {
        path: path_buf.clone(),
        reason: e.to_string(),
    })?;
    // Never unloaded: see the crate docs.
    let library: &'static Library = Box::leak(Box::new(library));

    let missing = |symbol: &[u8]| PluginError::MissingSymbol {
        path: path_buf.clone(),
        symbol: String::from_utf8_lossy(&symbol[..symbol.len() - 1]).into_owned(),
    };
    // SAFETY: the symbol is declared by the ABI as a `static u32`.
    let version = unsafe { library.get::<*const u32>(abi::SYMBOL_ABI_VERSION) }
        .map_err(|_| missing(abi::SYMBOL_ABI_VERSION))?;
    // SAFETY: a `static u32` symbol's address points to an initialised u32.
    let found = unsafe { **version };
    if found != abi::ABI_VERSION {
        return Err(PluginError::WrongAbi {
            path: path_buf,
            found,
            expected: abi::ABI_VERSION,
        });
    }
    // SAFETY: the ABI version matched, so these symbols have the documented signatures.
    let entrypoints = unsafe {
        Entrypoints {
            describe: *library
                .get::<DescribeFn>(abi::SYMBOL_DESCRIBE)
                .map_err(|_| missing(abi::SYMBOL_DESCRIBE))?,
            validate: *library
                .get::<ValidateFn>(abi::SYMBOL_VALIDATE)
                .map_err(|_| missing(abi::SYMBOL_VALIDATE))?,
            run: *library
                .get::<RunFn>(abi::SYMBOL_RUN)
                .map_err(|_| missing(abi::SYMBOL_RUN))?,
            free: *library
                .get::<FreeFn>(abi::SYMBOL_FREE)
                .map_err(|_| missing(abi::SYMBOL_FREE))?,
        }
    };
    let bytes = entrypoints.call_describe();
    let description: PluginDescription =
        serde_json::from_slice(&bytes).map_err(|e| PluginError::BadDescription {
            path: path_buf.clone(),
            reason: format!("invalid JSON ({e})"),
        })?;
    Ok((entrypoints, description))
}

/// Refuses files that are plainly not shared libraries, before the system loader sees them.
fn check_header(path: &Path) -> Result<(), PluginError> {
    use std::io::Read;
    let not_a_library = |reason: String| PluginError::NotALibrary {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PluginError::NotFound {
            path: path.to_path_buf(),
        },
        _ => not_a_library(e.to_string()),
    })?;
    let mut magic = [0u8; 4];
    let n = file
        .read(&mut magic)
        .map_err(|e| not_a_library(e.to_string()))?;
    let known: [&[u8]; 5] = [
        b"\x7fELF",
        &[0xcf, 0xfa, 0xed, 0xfe],
        &[0xce, 0xfa, 0xed, 0xfe],
        &[0xca, 0xfe, 0xba, 0xbe],
        b"MZ",
    ];
    if known.iter().any(|m| magic[..n].starts_with(m)) {
        Ok(())
    } else {
        Err(not_a_library("no ELF, Mach-O or PE header".into()))
    }
}
