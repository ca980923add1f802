//! Scenarios: a fault schedule with a workload in a TOML file ([`file`]), the recorded
//! history of a run ([`history`]), the checker of its invariants ([`check`]), the same steps
//! driving the election simulation ([`sim`], over many seeds [`sweep`]), and what a person
//! looks at afterwards ([`report`]).
//!
//! Running a scenario on a real cluster lives in `lab::scenario`; everything here is pure, so
//! the checker and the simulation run in `cargo test`.

pub mod check;
pub mod file;
pub mod history;
pub mod report;
pub mod runs;
pub mod sim;
pub mod sweep;

pub use check::{check, Summary, Verdict, Violation};
pub use file::{load, parse, FileError, Scenario};
pub use history::History;
pub use sweep::Sweep;
