//! Engine tests: one binary, grouped by module. `sim` drives 2000 simulated devices through the
//! same calls the server makes (check-in, status report, periodic advance) under a manual,
//! time-compressed clock; the other modules test one rule each on small fleets.

mod common;
mod engine;
mod props;
mod sim;
