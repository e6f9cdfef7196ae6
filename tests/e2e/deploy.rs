//! Deployment artefacts: the systemd units verify, use only real flags, and the
//! processes really tell systemd when they are ready and when they stop.

use super::harness::*;
use super::observability::{repo, tool};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// `--flag value` pairs and bare flags of a unit's `ExecStart=` (after the binary).
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    line.split_whitespace().skip(1).map(str::to_string).collect()
}

fn flag_value(args: &[String], flag: &str) -> Option<f64> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)?.parse().ok())
}

fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().find_map(|l| l.strip_prefix(&format!("{key}=")))
}

#[test]
fn systemd_units_verify_and_use_real_flags() {
    let dir = tmpdir();
    for name in ["ffrtmp-master.service", "ffrtmp-worker.service"] {
        let unit = std::fs::read_to_string(repo(&format!("deploy/systemd/{name}"))).unwrap();
        assert_eq!(setting(&unit, "Type"), Some("notify"), "{name}: readiness by sd_notify");
        for hardening in ["NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "LoadCredential="] {
            assert!(unit.contains(hardening), "{name} has {hardening}");
        }
        assert!(
            !unit.contains("--api-key ") && !unit.contains("Environment=MASTER_API_KEY"),
            "{name}: keys only from credentials"
        );
        let args = exec_start(&unit);
        let help = std::process::Command::new(BIN).args([args[0].as_str(), "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{name}: `{flag}` is not in --help"
            );
        }
        if name == "ffrtmp-worker.service" {
            assert_eq!(setting(&unit, "KillMode"), Some("mixed"), "SIGTERM to the worker alone; it drains its ffmpeg");
            let drain = flag_value(&args, "--drain-timeout").unwrap();
            let stop: f64 = setting(&unit, "TimeoutStopSec").unwrap().parse().unwrap();
            assert!(stop > drain, "TimeoutStopSec {stop} must exceed --drain-timeout {drain}");
            assert!(
                unit.contains("DeviceAllow=/dev/dri") && unit.contains("DeviceAllow=/dev/nvidiactl"),
                "GPUs reachable"
            );
        }
        if tool("systemd-analyze", &["--version"]) {
            // Verified as installed: with this build's binary where the unit expects its own.
            let copy = dir.path().join(name);
            std::fs::write(&copy, unit.replace("/usr/local/bin/ffrtmp", BIN)).unwrap();
            let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
            let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {name}:\n{said}");
        }
    }
}

fn notified(sock: &UnixDatagram, want: &str) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no notification with {want}: {e}"));
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.contains(want) {
            return msg;
        }
    }
}

#[test]
fn master_and_worker_tell_systemd_when_ready_and_when_stopping() {
    let dir = tmpdir();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let env = [("NOTIFY_SOCKET".to_string(), path.to_str().unwrap().to_string())];
    let mut m = TestMaster::start_with_env(&[], &env);
    let msg = notified(&sock, "READY=1");
    assert!(msg.contains(&format!("STATUS=listening on {}", m.url)), "{msg}");
    let mut w = TestWorker::start_with_env(&m, &["--executor", "noop"], &env);
    let msg = notified(&sock, "READY=1");
    assert!(msg.contains(&w.node_id) && msg.contains("registered"), "{msg}");
    assert!(w.terminate().success());
    assert!(notified(&sock, "STOPPING=1").contains("draining"));
    assert!(m.terminate().success());
    assert!(notified(&sock, "STOPPING=1").contains("in-flight"));
}
