//! The plugins every node ships with, and the node resources they use.
//!
//! Task kinds such as `echo` or `sleep` exist to exercise the machinery;
//! these do real work that most pipelines need without writing a plugin:
//! reshaping JSON with a jq filter (`json.transform`), calling an HTTP
//! endpoint (`http.webhook`) and running a PostgreSQL statement
//! (`sql.query`). They are ordinary [`troupe_plugin::Plugin`]s, declared
//! with `register_plugin!`, so linking this crate is all a node does to
//! offer them. The last two need a node resource; [`resources`] builds
//! those, so the node and the plugins agree on names and types.
#![deny(missing_docs)]

pub mod resources;
pub mod sql;
pub mod transform;
pub mod webhook;
