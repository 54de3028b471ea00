//! Black-box tests of several nodes together: real `troupe` processes
//! gossiping on loopback, killed and restarted.

mod membership;
mod tasks;
