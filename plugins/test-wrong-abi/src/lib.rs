//! A plugin built for another ABI version. Its entry points abort the process if called: the
//! host must refuse it from the version symbol alone, before running any of its code.

#![allow(clippy::missing_safety_doc)]

use monoscope_plugin_abi::abi::{Bytes, Host, OwnedBytes};

#[unsafe(no_mangle)]
pub static MONOSCOPE_PLUGIN_ABI_VERSION: u32 = 999;

#[unsafe(no_mangle)]
pub extern "C" fn monoscope_plugin_describe() -> OwnedBytes {
    std::process::abort()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn monoscope_plugin_validate(_: Bytes, _: Bytes, _: *mut OwnedBytes) -> i32 {
    std::process::abort()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn monoscope_plugin_run(
    _: Bytes,
    _: Bytes,
    _: *const Host,
    _: *mut OwnedBytes,
) -> i32 {
    std::process::abort()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn monoscope_plugin_free(_: OwnedBytes) {
    std::process::abort()
}
