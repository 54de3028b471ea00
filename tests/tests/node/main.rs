//! Black-box tests of single nodes: real `troupe` processes over HTTP.
//! All in one test binary so it links once.

mod api;
mod auth;
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
