//! Pure logic: no actix, no IO. Tested table-driven in milliseconds.

pub mod params;
pub mod placement;
pub mod queue;
pub mod state;
