//! The contract between monoscope and a stage plugin: a dynamic library that adds stage kinds
//! without being compiled into monoscope.
//!
//! Rust has no stable ABI, so nothing Rust-specific crosses the boundary: only `extern "C"`
//! functions, `#[repr(C)]` structs, and bytes in documented formats (JSON text for descriptions,
//! configs, requests and results; artifacts as paths to files in their own formats).
//!
//! - [`abi`]: the symbols a plugin exports and the types they use. [`ABI_VERSION`] is checked
//!   before any plugin function is called.
//! - [`wire`]: the JSON documents exchanged (descriptions, run requests, run results).
//! - [`sdk`]: what a Rust plugin author uses: the [`sdk::PluginStage`] trait and the
//!   [`export_plugin!`] macro, which generates every exported symbol with `catch_unwind` around
//!   each entry point, so a panicking plugin reports an error instead of aborting the host.
//!
//! A plugin written in another language exports the same symbols by hand (see `docs/plugins.md`).

pub mod abi;
pub mod sdk;
pub mod wire;

pub use abi::ABI_VERSION;
