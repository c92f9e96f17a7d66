//! The process's allocator settings (glibc only).
//!
//! glibc's defaults give each large buffer (a micro-batch's column, a Parquet
//! page) its own `mmap` and hand freed heap tops back to the kernel at once, so
//! every batch faults its memory in again: on a 1 M-row stateful ingest that is
//! ~45 000 extra page faults and a third of the system time (BENCHMARKS.md,
//! "Allocator settings"). Keeping buffers up to 32 MiB on the heap and freed
//! memory up to 256 MiB in the process reuses it instead. Peak RSS does not
//! change: the memory kept is memory the process already held.
//!
//! Nothing is changed when `GLIBC_TUNABLES` sets any `glibc.malloc` value: the
//! operator's settings win.

/// Applies the settings above; a no-op off glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called once,
        // at start, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}
