//! How the process allocates memory.

/// Tells glibc's allocator to serve large blocks from its heap and keep freed memory for the
/// next allocation instead of unmapping it. A forward pass allocates its 400 MB of logits, a
/// training step its activation buffers, afresh each time; unmapped and mapped again, every
/// 4 KiB of them costs a page fault and the kernel's zeroing, which in a virtual machine made a
/// fifth of the forward pass's time with logits (`cargo xtask bench forward`, BENCHMARKS.md).
/// The price is memory: what is freed is kept and the heap fragments, so the resident size
/// only grows (the quickstart's peak: BENCHMARKS.md). `MONOSCOPE_RETAIN_FREED_MEMORY=0` turns
/// it off.
///
/// Call it first thing in `main`, before any thread starts. A no-op off Linux/glibc.
pub fn retain_freed_memory() {
    if std::env::var_os("MONOSCOPE_RETAIN_FREED_MEMORY").is_some_and(|v| v == "0") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // <malloc.h>
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        // SAFETY: mallopt only changes allocator parameters; called before other threads
        // exist, it races with no allocation.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
