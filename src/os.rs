//! Process-wide operating-system settings shared by every role.

/// Raise the soft open-file limit to the hard limit. A master holds one descriptor per
/// parked long-poll (two per worker: claims and control), and the common soft default
/// of 1024 would stop it answering anyone — `/health` included — at ~500 workers.
/// Returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Resolve at the first SIGTERM or SIGINT (master and worker shut down gracefully).
pub async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
