//! Black-box tests of single nodes: real `troupe` processes over HTTP.
//! All in one test binary so it links once.

mod alerts;
mod api;
mod auth;
mod cli;
mod cluster_up;
mod durability;
mod events;
mod limits;
mod openapi;
mod plugins;
mod postgres;
mod supervision;
mod tasks;
mod windows;
