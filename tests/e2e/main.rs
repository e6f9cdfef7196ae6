//! The one integration-test binary: real ffrtmp processes, real SQLite files, real
//! ffmpeg where a test needs it.

mod browser;
mod chunking;
mod cli;
mod console;
mod deploy;
mod events;
mod faults;
mod graphs;
mod ha;
mod harness;
mod master_api;
mod media;
mod observability;
mod postgres;
mod security;
mod seed_compat;
mod worker_ffmpeg;
mod worker_protocol;
