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

/// The addresses `host` resolves to (itself, if it is an address), looked up off the
/// async threads and given up after 5 s (empty: it does not resolve). The SSRF checks
/// of URL inputs and webhooks judge these.
pub async fn resolve_host(host: &str, port: u16) -> Vec<std::net::IpAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return vec![ip];
    }
    use std::net::ToSocketAddrs;
    let h = host.to_string();
    let lookup = actix_rt::task::spawn_blocking(move || {
        (h.as_str(), port).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>())
    });
    match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
        Ok(Ok(Ok(a))) => a,
        _ => Vec::new(),
    }
}
