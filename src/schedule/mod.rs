//! The review schedule: what is due and why (pure, in `due`), and the runner that claims due pilots and sends.

pub mod digest;
pub mod due;
pub mod runner;

pub use due::{Due, DueKind, ScheduleState, next_due};
