//! The `troupe` binary: the allocator, then hand over to the library.

use std::process::ExitCode;

/// jemalloc, not glibc's malloc: ingestion allocates and frees a few
/// small objects per event on one thread and frees them on another, and
/// glibc's arenas (capped at two to bound memory) made one run in three
/// stall on arena locks (130k events/s instead of 400k); jemalloc keeps
/// per-thread caches and runs steadily.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before its first allocation (the
/// `_RJEM_MALLOC_CONF` environment variable still overrides them): two
/// arenas instead of eight per core, since a node's many short-lived
/// blocking threads would each leave memory resident in an arena of
/// their own; freed pages go back to the system within a second. Peak
/// RSS while ingesting a 2 GB body: 108.9 MiB with the defaults, 97.8
/// MiB with these, at the same rate.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 47] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    troupe_node::commands::main().await
}
