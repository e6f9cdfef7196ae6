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

/// No transparent huge pages for this process. The allocator asks the kernel for them
/// (`madvise`) on its arenas, and every first touch of a fresh 2 MiB page then zeroes
/// all of it: while a master placed its first thousand jobs, over a quarter of its CPU
/// went to those page faults (`perf`), for a heap of small short-lived objects that
/// gains nothing from huge pages. Redis and MongoDB advise the same for their servers.
pub fn disable_transparent_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        log::debug!("cannot disable transparent huge pages: {e}");
    }
}

/// Resolve at the first SIGTERM or SIGINT (master and worker shut down gracefully).
pub async fn wait_for_shutdown_signal() {
    shutdown_signal().await
}

/// SIGTERM/SIGINT handlers installed now (so a signal that arrives before the returned
/// future is awaited — right after telling systemd the service is ready — is not fatal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
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

/// Largest secrets file read (`--…-file` options).
const MAX_SECRETS_FILE: u64 = 64 * 1024;

/// The secrets a `--…-file` option names: one per line, blank lines and `#` comments
/// skipped, surrounding whitespace trimmed. Keys kept in files never appear in `ps` or in
/// a process's environment (systemd's `LoadCredential=`, Kubernetes and compose secrets
/// mount such files). A file others may read is used, with a warning.
pub fn read_secrets(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    let meta = file.metadata()?;
    if meta.len() > MAX_SECRETS_FILE {
        anyhow::bail!("{flag} {}: larger than {MAX_SECRETS_FILE} bytes; is it the right file?", path.display());
    }
    if meta.permissions().mode() & 0o007 != 0 {
        log::warn!(
            "{flag} {}: readable by every user (mode {:o}); chmod o-rwx it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let mut text = String::new();
    file.take(MAX_SECRETS_FILE)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    let secrets: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    if secrets.is_empty() {
        anyhow::bail!("{flag} {}: the file holds no secret", path.display());
    }
    Ok(secrets)
}

/// The one secret a `--…-file` option names (a file with several is refused).
pub fn read_secret(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let mut all = read_secrets(flag, path)?;
    if all.len() > 1 {
        anyhow::bail!("{flag} {}: holds {} lines; it takes one secret", path.display(), all.len());
    }
    Ok(all.remove(0))
}

/// Tell systemd how the service is (`Type=notify` units): ready once it serves, stopping
/// once it drains. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.
pub fn notify_systemd(ready: bool, status: &str) {
    use sd_notify::NotifyState;
    let state = [if ready { NotifyState::Ready } else { NotifyState::Stopping }, NotifyState::Status(status)];
    if let Err(e) = sd_notify::notify(false, &state) {
        log::warn!("could not notify systemd ({status}): {e}");
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secrets_files_are_read_line_by_line_and_empty_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "# rotated 2026-12\nold-key\n\n  new-key  \n").unwrap();
        assert_eq!(read_secrets("--api-key-file", &p).unwrap(), ["old-key", "new-key"]);
        assert!(read_secret("--webhook-secret-file", &p).unwrap_err().to_string().contains("takes one secret"));
        std::fs::write(&p, "only\n").unwrap();
        assert_eq!(read_secret("--webhook-secret-file", &p).unwrap(), "only");
        std::fs::write(&p, "\n# nothing\n").unwrap();
        assert!(read_secrets("--api-key-file", &p).unwrap_err().to_string().contains("holds no secret"));
        let e = read_secrets("--api-key-file", &dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("--api-key-file ") && e.contains("missing"), "{e}");
    }
}
