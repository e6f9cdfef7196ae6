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

/// `kubectl kustomize <overlay>` as JSON documents (PyYAML, which kubernetes-validate
/// brings, converts).
fn render(overlay: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo(&format!("deploy/kubernetes/overlays/{overlay}")))
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl kustomize {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    let mut py = std::process::Command::new("python3")
        .args(["-c", "import sys, yaml, json; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), &out.stdout).unwrap();
    let json = py.wait_with_output().unwrap();
    assert!(json.status.success(), "YAML of {overlay} parses");
    serde_json::from_slice(&json.stdout).unwrap()
}

#[test]
fn kubernetes_overlays_render_validate_and_use_real_flags() {
    if !tool("kubectl", &["version", "--client"]) || !tool("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = tmpdir();
    for (overlay, master_kind) in
        [("sqlite-single", "StatefulSet"), ("postgres-ha", "StatefulSet"), ("gpu-workers", "StatefulSet")]
    {
        let docs = render(overlay);
        let find = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{overlay}: no {kind} {name}"))
        };
        let master = find(master_kind, "ffrtmp-master");
        let worker = find("Deployment", "ffrtmp-worker");
        for kind in ["Service", "PodDisruptionBudget", "ServiceMonitor"] {
            assert!(docs.iter().any(|d| d["kind"] == kind), "{overlay} has a {kind}");
        }
        for workload in [master, worker] {
            let pod = &workload["spec"]["template"];
            assert_eq!(pod["metadata"]["annotations"]["prometheus.io/scrape"], "true");
            let c = &pod["spec"]["containers"][0];
            let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
            let help = std::process::Command::new(BIN).args([args[0].as_str(), "--help"]).output().unwrap();
            let help = String::from_utf8_lossy(&help.stdout).to_string();
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "{overlay}: `{flag}` not in --help"
                );
                assert!(
                    !["--api-key", "--worker-api-key", "--read-api-key", "--database-url"].contains(&flag.as_str()),
                    "{overlay}: keys only from files"
                );
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                let path = c[probe]["httpGet"]["path"].as_str().unwrap_or_default();
                assert!(["/health", "/ready"].contains(&path), "{overlay}: {probe} on a real endpoint, not {path:?}");
            }
            assert!(
                c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(),
                "{overlay}: resources"
            );
        }
        let c = &worker["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        let drain: u64 = args[args.iter().position(|a| a == "--drain-timeout").unwrap() + 1].parse().unwrap();
        let grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(grace > drain, "{overlay}: grace period {grace}s must exceed --drain-timeout {drain}");
        assert!(c["lifecycle"]["preStop"]["exec"]["command"].is_array(), "{overlay}: a preStop that starts the drain");
        if overlay == "gpu-workers" {
            assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
            assert_eq!(worker["spec"]["template"]["spec"]["runtimeClassName"], "nvidia");
            let caps = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "NVIDIA_DRIVER_CAPABILITIES").unwrap();
            assert!(
                caps["value"].as_str().unwrap().split(',').any(|x| x == "video"),
                "NVENC needs the video capability"
            );
        }
        if overlay == "sqlite-single" {
            assert_eq!(master["spec"]["replicas"], 1, "SQLite is single-master");
            assert!(master["spec"]["volumeClaimTemplates"].is_array(), "the database on its own volume");
        } else {
            // Highly available masters: each advertises its own stable name, and the
            // workers are given exactly those URLs (a follower redirects only to one).
            let replicas = master["spec"]["replicas"].as_u64().unwrap();
            assert!(replicas >= 2, "{overlay}: a standby master");
            let m: Vec<String> =
                serde_json::from_value(master["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap();
            let advertised = &m[m.iter().position(|a| a == "--advertise-url").unwrap() + 1];
            let service = master["spec"]["serviceName"].as_str().unwrap();
            assert!(docs.iter().any(|d| d["kind"] == "Service"
                && d["metadata"]["name"] == service
                && d["spec"]["clusterIP"] == "None"));
            let name = master["metadata"]["name"].as_str().unwrap();
            let expected: Vec<String> =
                (0..replicas).map(|i| advertised.replace("$(POD_NAME)", &format!("{name}-{i}"))).collect();
            let given = &args[args.iter().position(|a| a == "--master").unwrap() + 1];
            assert_eq!(given.split(',').collect::<Vec<_>>(), expected, "{overlay}: workers list every master");
        }
        // Schema validation of every built-in kind (the Prometheus Operator's are CRDs).
        let mut files = Vec::new();
        for (i, d) in docs
            .iter()
            .enumerate()
            .filter(|(_, d)| !d["apiVersion"].as_str().unwrap().starts_with("monitoring.coreos.com"))
        {
            let p = dir.path().join(format!("{overlay}-{i}.json"));
            std::fs::write(&p, d.to_string()).unwrap();
            files.push(p);
        }
        let out = std::process::Command::new("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate {overlay}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
