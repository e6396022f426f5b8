//! The review schedule: the runner that claims due pilots and sends (what is due and why is the domain's: `domain::due`),
//! and the digest.

pub mod digest;
pub mod scheduler;

pub use scheduler::{Clock, DeliveryError, LEASE, Outbox, RunOutcome, Scheduler};

pub use crate::domain::due::{Due, DueKind, ScheduleState, next_due};
