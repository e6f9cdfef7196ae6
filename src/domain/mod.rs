//! Pure logic: no actix, no IO. Tested table-driven in milliseconds.

pub mod allow;
pub mod argv;
pub mod credentials;
pub mod health;
pub mod limits;
pub mod node;
pub mod params;
pub mod placement;
pub mod progress;
pub mod queue;
pub mod redact;
pub mod state;
