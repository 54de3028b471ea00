//! Troupe's actors and the pure logic they drive.
//!
//! Supervision ([`supervisor`]), the node's tree ([`tree`]), the scheduler's
//! task table, the plugin registry, and the storage traits that `node`
//! implements. Nothing here opens a socket or a file: storage arrives
//! through [`store::Storage`], so every actor runs in tests with
//! [`store::MemoryStorage`].
#![warn(missing_docs, unreachable_pub)]

pub mod alerts;
pub mod directory;
pub mod ingest;
pub mod ingestor;
pub mod membership;
pub mod placement;
pub mod plugins;
pub mod results;
pub mod scheduler;
pub mod schedules;
pub mod shard;
pub mod sink;
pub mod store;
pub mod supervisor;
pub mod tasks;
pub mod transform;
pub mod tree;
pub mod windows;
