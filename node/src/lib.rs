//! The `troupe` node: config, HTTP API, storage back ends, CLI and wiring.
//!
//! `main.rs` only sets the allocator and calls [`commands::main`]; [`run::run`] is the
//! whole life of one node and can be called from tests too.

pub mod alerts;
pub mod auth;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod eventlog;
pub mod gossip;
pub mod http;
pub mod loadgen;
pub mod local;
pub mod output;
pub mod postgres;
pub mod replication;
pub mod routing;
pub mod run;
pub mod signals;
pub mod status;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod transport;
