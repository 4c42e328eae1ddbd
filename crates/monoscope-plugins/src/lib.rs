//! The host side of the plugin ABI: loading a plugin dylib and registering its stage kinds.
//!
//! [`load_plugin`] checks, in this order and before calling any plugin function: that the file
//! exists and is a dynamic library (by its header, then by the system loader), that it exports
//! `MONOSCOPE_PLUGIN_ABI_VERSION` (a data symbol: reading it runs no plugin code) equal to
//! [`monoscope_plugin_abi::ABI_VERSION`], and that it exports every entry point. Only then does
//! it ask the plugin to describe itself, and registers each of its stage kinds, refusing a kind
//! whose name is taken.
//!
//! Libraries are never unloaded: a plugin's code may run on any stage thread until the process
//! exits, and unloading a library whose threads or callbacks are still alive is unsound.

mod factory;
mod load;

pub use load::{LoadedPlugin, PluginError, load_plugin};
