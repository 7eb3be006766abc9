//! Giving freed heap memory back to the OS (part of the binary, not the library: it is the one
//! place that calls into libc). glibc's malloc keeps what a burst of connections freed as long
//! as anything live sits above it in the heap, so a sidecar's RSS would stay at its peak after
//! a spike. Every few seconds, when glibc holds more than a few MiB free, `malloc_trim(0)`
//! returns the free pages (Envoy does the same with tcmalloc's release interval). The check is
//! cheap (`mallinfo2` reads arena counters); the trim runs only after churn, on its own thread,
//! so no request waits for it except on the arena lock for the trim's few milliseconds.

use std::time::Duration;

/// Free heap bytes above which a trim is worth it.
const FREE_THRESHOLD: usize = 4 << 20;

pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("outrigger-trim".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(5));
                // SAFETY: mallinfo2 and malloc_trim only read and adjust glibc's own heap
                // bookkeeping; both are thread-safe.
                let free = unsafe { libc::mallinfo2() }.fordblks;
                if free > FREE_THRESHOLD {
                    unsafe { libc::malloc_trim(0) };
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory trimmer; RSS may stay at its peak after bursts");
        }
    }
}
