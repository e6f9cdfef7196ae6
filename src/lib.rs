//! ffrtmp: a distributed FFmpeg/RTMP transcoding farm.
//!
//! One binary with three roles: `master` (actors + REST API + database), `worker`
//! (runs ffmpeg on a transcoding machine) and client commands (`jobs …`, `nodes …`).
//! Layers: `http` → `actors` → pure `domain` logic + `db`. `domain` imports neither
//! actix nor diesel; `worker` shares only `domain` and `wire` with the master.

pub mod actors;
pub mod audit;
pub mod bench;
pub mod client;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod master;
pub mod os;
pub mod up;
pub mod wire;
pub mod worker;
