//! Giving freed heap memory back to the OS (part of the binary, not the library: it is the one
//! place that calls into libc). glibc's malloc keeps what a burst of connections freed as long
//! as anything live sits above it in the heap, so a sidecar's RSS would stay at its peak after
//! a spike. `malloc_trim(0)` returns the free pages (Envoy does the same with tcmalloc's release
//! interval), but it holds the arena lock for milliseconds on a fragmented heap, and so does
//! `mallinfo2`, which walks every free chunk. So the trigger is cheap and specific: once a
//! second, the listener's counts of open client connections and of those holding hyper's
//! buffers (two atomics) are compared with their peaks since the last trim; when either has
//! fallen by 256 or more (≥ 4 MiB of buffers let go: connections closed or were parked), trim.
//! Steady churn (a new connection per request) keeps the counts level and never trims. Memory
//! freed by anything else (upstream pool churn, a reload) is looked for with `mallinfo2` once
//! every 10 s.
// The one place the binary calls into libc: glibc's heap trimming has no safe wrapper.
#![allow(unsafe_code)]

use outrigger::listener::client_connections;
use std::time::Duration;

/// Connections whose buffers must have been released since the peak before a trim.
const RELEASED_CONNECTIONS: usize = 256;
/// Free heap bytes above which the slow check trims.
const FREE_THRESHOLD: usize = 4 << 20;
/// Fast checks per slow (`mallinfo2`) check.
const SLOW_EVERY: u32 = 10;

pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("outrigger-trim".into())
            .spawn(|| {
                let mut peak = (0usize, 0usize);
                let mut tick = 0u32;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    tick = tick.wrapping_add(1);
                    let now = client_connections();
                    peak = (peak.0.max(now.0), peak.1.max(now.1));
                    let burst_over = peak.0 - now.0 >= RELEASED_CONNECTIONS
                        || peak.1 - now.1 >= RELEASED_CONNECTIONS;
                    // The heap walk only when the cheap test has not already decided: right
                    // after a burst is when it is slowest.
                    // SAFETY: mallinfo2 and malloc_trim only read and adjust glibc's own heap
                    // bookkeeping; both are thread-safe.
                    let trim = burst_over
                        || (tick.is_multiple_of(SLOW_EVERY)
                            && unsafe { libc::mallinfo2() }.fordblks > FREE_THRESHOLD);
                    if trim {
                        unsafe { libc::malloc_trim(0) };
                        peak = now;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory trimmer; RSS may stay at its peak after bursts");
        }
    }
}
