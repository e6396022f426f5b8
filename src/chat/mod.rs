//! Chat adapters: each translates its platform's events into engine requests and replies back. None decides.

pub mod console;
pub mod discord;
