//! Exported symbols and `#[repr(C)]` types, version [`ABI_VERSION`].
//!
//! A plugin exports:
//!
//! | symbol | type | meaning |
//! |---|---|---|
//! | `MONOSCOPE_PLUGIN_ABI_VERSION` | `static u32` | must equal the host's [`ABI_VERSION`]; read as data, so no plugin code runs before it is checked |
//! | `monoscope_plugin_describe` | `fn() -> OwnedBytes` | JSON [`crate::wire::PluginDescription`] |
//! | `monoscope_plugin_validate` | `fn(kind: Bytes, config: Bytes, out: *mut OwnedBytes) -> i32` | `out`: the resolved config (JSON) on success, [`crate::wire::Failure`] JSON otherwise |
//! | `monoscope_plugin_run` | `fn(kind: Bytes, request: Bytes, host: *const Host, out: *mut OwnedBytes) -> i32` | request: [`crate::wire::RunRequest`]; `out`: [`crate::wire::RunResult`] or [`crate::wire::Failure`] |
//! | `monoscope_plugin_free` | `fn(OwnedBytes)` | frees a buffer the plugin returned |
//!
//! Return codes are [`Status`] values. Buffers the host passes in ([`Bytes`]) are valid for the
//! duration of the call; buffers the plugin returns ([`OwnedBytes`]) belong to the plugin and are
//! handed back through `monoscope_plugin_free` once the host has copied them.

use std::ffi::c_void;

/// Incremented on every incompatible change to the symbols, types or wire documents.
pub const ABI_VERSION: u32 = 1;

pub const SYMBOL_ABI_VERSION: &[u8] = b"MONOSCOPE_PLUGIN_ABI_VERSION\0";
pub const SYMBOL_DESCRIBE: &[u8] = b"monoscope_plugin_describe\0";
pub const SYMBOL_VALIDATE: &[u8] = b"monoscope_plugin_validate\0";
pub const SYMBOL_RUN: &[u8] = b"monoscope_plugin_run\0";
pub const SYMBOL_FREE: &[u8] = b"monoscope_plugin_free\0";

/// Result of an entry point.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// The stage failed; `out` holds a `Failure` with the message.
    Error = 1,
    /// The plugin panicked; `out` holds a `Failure` with the panic message.
    Panicked = 2,
    /// The config was rejected; `out` holds a `Failure` listing the problems.
    InvalidConfig = 3,
    /// The stage noticed the host's cancellation and stopped.
    Cancelled = 4,
}

impl Status {
    pub fn from_code(code: i32) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::Panicked,
            3 => Status::InvalidConfig,
            4 => Status::Cancelled,
            _ => return None,
        })
    }
}

/// Bytes borrowed for the duration of a call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl Bytes {
    pub fn from_slice(slice: &[u8]) -> Bytes {
        Bytes {
            ptr: slice.as_ptr(),
            len: slice.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a` (or `len` must be 0).
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// A buffer allocated by the plugin; return it with `monoscope_plugin_free`.
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBytes {
    pub ptr: *mut u8,
    pub len: usize,
    pub capacity: usize,
}

impl OwnedBytes {
    pub const EMPTY: OwnedBytes = OwnedBytes {
        ptr: std::ptr::null_mut(),
        len: 0,
        capacity: 0,
    };

    pub fn from_vec(bytes: Vec<u8>) -> OwnedBytes {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        OwnedBytes {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
        }
    }

    /// # Safety
    /// Must come from [`OwnedBytes::from_vec`] in the same library, and be reclaimed once.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { Vec::from_raw_parts(self.ptr, self.len, self.capacity) }
        }
    }
}

/// Services the host offers a running plugin stage.
#[repr(C)]
#[derive(Debug)]
pub struct Host {
    pub ctx: *mut c_void,
    /// Whether the run was cancelled; a stage checks it between units of work.
    pub is_cancelled: extern "C" fn(ctx: *mut c_void) -> bool,
    /// Reports progress (`length` 0: unknown).
    pub progress: extern "C" fn(ctx: *mut c_void, position: u64, length: u64),
    /// A UTF-8 log line at `level` 0 error, 1 warn, 2 info, 3 debug.
    pub log: extern "C" fn(ctx: *mut c_void, level: u32, message: Bytes),
}

pub type DescribeFn = unsafe extern "C" fn() -> OwnedBytes;
pub type ValidateFn = unsafe extern "C" fn(Bytes, Bytes, *mut OwnedBytes) -> i32;
pub type RunFn = unsafe extern "C" fn(Bytes, Bytes, *const Host, *mut OwnedBytes) -> i32;
pub type FreeFn = unsafe extern "C" fn(OwnedBytes);
