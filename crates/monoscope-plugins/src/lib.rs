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
//!
//! With [`Isolation::Process`] ([`load_plugin_with`]; `isolation = "process"` on a
//! `[[plugins]]` entry), only `run` leaves the host: describing the plugin and validating its
//! stages' configs stay in this process (they are quick, and come after the ABI checks), while
//! each stage run happens in a child process ([`isolate`]), so that an abort, a crash or a hang
//! fails that stage alone. Writes outside the stage's directory are detected afterwards, not
//! prevented (the `watch` module says exactly what is checked).

mod factory;
pub mod isolate;
mod load;
mod watch;

pub use isolate::{Isolation, serve_child};
pub use load::{LoadedPlugin, PluginError, load_plugin, load_plugin_with};
