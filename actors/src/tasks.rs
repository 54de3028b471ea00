//! Running tasks on this node: the built-in kinds, the fair priority queue
//! and the worker that runs one attempt, on ractor's factory.

pub mod gauges;
pub mod kinds;
pub mod queue;
pub mod worker;
