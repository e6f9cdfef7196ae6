//! Issue 6: metrics, dashboards, rules and the compose stack, proven with real
//! promtool, a real Prometheus scraping a real master and worker, the official Grafana
//! dashboard schema and Debian's docker-compose.

use crate::harness::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub(crate) fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Tools CI installs: missing under CI is a failure, missing elsewhere skips the test.
pub(crate) fn tool(name: &str, probe: &[&str]) -> bool {
    let ok = Command::new(name).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{name} must be installed in CI (.ci/run)");
        eprintln!("skipped: {name} is not installed");
    }
    ok
}

fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn live_metrics_pass_promtool_and_start_at_zero() {
    if !tool("promtool", &["--version"]) {
        return;
    }
    let m = TestMaster::start(&[]);
    let w = TestWorker::start(&m, &[]);
    let master = m.api().text("/metrics");
    let (ok, msg) = promtool_check_metrics(&master);
    assert!(ok, "master /metrics: {msg}");
    let worker = ureq::get(&w.metrics_url).call().unwrap().into_string().unwrap();
    let (ok, msg) = promtool_check_metrics(&worker);
    assert!(ok, "worker /metrics: {msg}");
    // Every known label value is present at zero on a fresh master.
    let fresh = TestMaster::start(&[]).api().text("/metrics");
    let mut want: Vec<String> = Vec::new();
    for s in [
        "pending",
        "queued",
        "assigned",
        "processing",
        "paused",
        "completed",
        "failed",
        "canceled",
        "retrying",
        "rejected",
        "timed_out",
    ] {
        want.push(format!("ffrtmp_jobs_total{{state=\"{s}\"}} 0"));
        want.push(format!("ffrtmp_jobs_in_state{{state=\"{s}\"}} 0"));
    }
    for p in ["high", "medium", "low"] {
        want.push(format!("ffrtmp_queue_by_priority{{priority=\"{p}\"}} 0"));
    }
    for q in ["live", "default", "batch"] {
        want.push(format!("ffrtmp_queue_by_type{{type=\"{q}\"}} 0"));
    }
    for s in ["available", "busy", "draining", "offline"] {
        want.push(format!("ffrtmp_nodes_by_status{{status=\"{s}\"}} 0"));
    }
    for r in ["success", "no_jobs", "error"] {
        want.push(format!("ffrtmp_schedule_attempts_total{{result=\"{r}\"}} 0"));
    }
    for a in ["pause", "resume", "cancel"] {
        want.push(format!("ffrtmp_control_latency_seconds_count{{action=\"{a}\"}} 0"));
    }
    for e in ["auto", "ffmpeg", "gstreamer"] {
        want.push(format!("ffrtmp_jobs_completed_by_engine_total{{engine=\"{e}\"}} 0"));
    }
    for line in want {
        assert!(fresh.contains(&line), "fresh master lacks `{line}`");
    }
}

#[test]
fn rules_check_and_unit_tests_pass() {
    if !tool("promtool", &["--version"]) {
        return;
    }
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo("prometheus/rules/ffrtmp.rules.yml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let config = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(repo("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "{}{}",
        String::from_utf8_lossy(&config.stdout),
        String::from_utf8_lossy(&config.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo("prometheus/tests/ffrtmp.test.yml"))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // Every alert rule has a unit test.
    let rules = std::fs::read_to_string(repo("prometheus/rules/ffrtmp.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(repo("prometheus/tests/ffrtmp.test.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}")), "alert {alert} has no promtool test");
    }
}

#[test]
fn dashboards_validate_against_the_grafana_schema() {
    let validator = repo("tests/grafana");
    if !validator.join("node_modules/@grafana/schema").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must run `npm install` in tests/grafana");
        eprintln!("skipped: run `npm install` in tests/grafana to validate dashboards");
        return;
    }
    let run = |dir: &Path| Command::new("node").arg(validator.join("validate.mjs")).arg(dir).output().unwrap();
    let out = run(&repo("grafana/dashboards"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // The validator really rejects a broken dashboard.
    let bad = tmpdir();
    let mut d: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("grafana/dashboards/ffrtmp-overview.json")).unwrap())
            .unwrap();
    d["panels"][1]["gridPos"] = json!({"h": 1});
    d["panels"][2]["colour"] = json!("red");
    std::fs::write(bad.path().join("bad.json"), d.to_string()).unwrap();
    let out = run(bad.path());
    assert!(!out.status.success(), "a dashboard with a broken gridPos must fail");
    // Every dashboard is editable and uses the provisioned datasource uid.
    let ds = std::fs::read_to_string(repo("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(ds.contains("uid: ffrtmp-prometheus"));
    let provider = std::fs::read_to_string(repo("grafana/provisioning/dashboards/ffrtmp.yml")).unwrap();
    assert!(provider.contains("allowUiUpdates: true"));
    for f in std::fs::read_dir(repo("grafana/dashboards")).unwrap().flatten() {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
        assert_eq!(d["editable"], true, "{:?}", f.path());
        for p in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
            assert_eq!(p["datasource"]["uid"], "ffrtmp-prometheus", "{:?} {}", f.path(), p["title"]);
        }
    }
}

#[test]
fn audit_is_clean_and_catches_a_missing_metric() {
    let ok = Command::new(BIN).args(["audit", "metrics"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let fixture = tmpdir();
    std::fs::write(
        fixture.path().join("bad.json"),
        json!({"schemaVersion": 39, "panels": [{"type": "stat", "targets": [{"expr": "sum(ffrtmp_jobs_waiting_total)"}]}]}).to_string(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["audit", "metrics", "--dashboards"])
        .arg(fixture.path())
        .arg("--rules")
        .arg(repo("prometheus/rules"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("missing:") && text.contains("ffrtmp_jobs_waiting_total"), "{text}");
    assert!(
        text.contains("unused: ffrtmp_worker_cpu_usage_ratio"),
        "families only the shipped dashboards use are reported unused: {text}"
    );
}

fn panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(repo("grafana/dashboards")).unwrap().flatten() {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap().replace("$node", ".*");
                out.push((format!("{} / {}", d["title"].as_str().unwrap(), p["title"].as_str().unwrap()), expr));
            }
        }
    }
    out
}

#[test]
fn every_panel_query_returns_series_from_a_real_prometheus() {
    if !tool("prometheus", &["--version"]) {
        return;
    }
    let m = TestMaster::start(&["--retry-backoff-ms", "50"]);
    let api = m.api();
    let w = TestWorker::start(&m, &[]);
    // A workload with completed AND failed jobs (and some API traffic).
    let ok: Vec<String> =
        (0..3).map(|_| api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 1}}))).collect();
    let bad = api.submit(json!({"max_retries": 0, "parameters": {"input": "/etc/hostname"}}));
    for id in ok.iter().chain([&bad]) {
        wait_terminal(&api, id, Duration::from_secs(60));
    }
    assert_eq!(api.status(&bad), "failed");
    let dir = tmpdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let master_target = m.url.trim_start_matches("http://").to_string();
    let worker_target = w.metrics_url.trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: ffrtmp-master\n    static_configs:\n      - targets: [\"{master_target}\"]\n  - job_name: ffrtmp-worker\n    static_configs:\n      - targets: [\"{worker_target}\"]\n",
        repo("prometheus/rules/ffrtmp.rules.yml").display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(prom);
    let base = format!("http://127.0.0.1:{port}");
    let query = |q: &str| -> Value {
        match ureq::get(&format!("{base}/api/v1/query")).query("query", q).call() {
            Ok(r) => r.into_json().unwrap_or(Value::Null),
            Err(ureq::Error::Status(_, r)) => r.into_json().unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    };
    let series = |q: &str| -> usize { query(q)["data"]["result"].as_array().map(|a| a.len()).unwrap_or(0) };
    wait_until(Duration::from_secs(60), "Prometheus has scraped both targets a few times", || {
        series("count_over_time(ffrtmp_queue_length[1m]) >= 3") == 1
            && series("count_over_time(ffrtmp_worker_slots[1m]) >= 3") == 1
    });
    let queries = panel_queries();
    assert!(queries.len() > 40, "{} panel queries", queries.len());
    for (panel, expr) in &queries {
        let mut last = Value::Null;
        wait_until(
            Duration::from_secs(30),
            &format!("{panel}: `{expr}` returns a series (last answer: see panic)"),
            || {
                last = query(expr);
                assert_eq!(last["status"], "success", "{panel}: `{expr}` does not parse: {last}");
                last["data"]["result"].as_array().is_some_and(|a| !a.is_empty())
            },
        );
    }
    // The all-time success rate is the SLA formula over the real counters: 3 of 4.
    let v = query("ffrtmp:job_success_ratio:all_time");
    let ratio: f64 = v["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((ratio - 75.0).abs() < 0.01, "{v}");
    // Master and worker series join on node_id.
    assert_eq!(series(&format!("ffrtmp_worker_slots{{node_id=\"{}\"}}", w.node_id)), 1);
}

#[test]
fn series_stay_bounded_with_many_ids_and_paths() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let count_series = |text: &str| text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let before = count_series(&api.text("/metrics"));
    for i in 0..300 {
        api.get(&format!("/jobs/{i}"));
        api.get(&format!("/jobs/{}", uuid_like(i)));
        api.get(&format!("/random/path/{i}"));
        api.post(&format!("/jobs/{}/pause", uuid_like(i)), json!({}));
    }
    for _ in 0..50 {
        api.submit(json!({}));
    }
    let text = api.text("/metrics");
    let after = count_series(&text);
    assert_eq!(before, after, "no new series from ids, paths or jobs");
    assert!(after < 1500, "{after} series");
    assert!(!text.contains("/random/path"));
}

fn uuid_like(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

#[test]
fn status_snapshot_and_health_score() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let (_, h) = api.get("/api/v1/health/score");
    assert_eq!(h["factors"][0]["factor"], "no_workers", "{h}");
    assert_eq!(h["score"], 50.0);
    api.register("n1", json!({"encoders": ["libx264"]}));
    api.submit(json!({"queue": "live"}));
    api.submit(json!({"parameters": {"codec": "h264_nvenc"}}));
    let job = api.claim("n1", 5.0).unwrap();
    api.post(
        &format!("/jobs/{}/progress", job["id"].as_str().unwrap()),
        json!({"node_id": "n1", "attempt": 1, "percent": 42.0, "fps": 30.0}),
    );
    let (s, st) = api.get("/api/v1/status");
    assert_eq!(s, 200);
    assert_eq!(st["queues"]["total"], 1);
    assert_eq!(st["running"][0]["progress"]["percent"], 42.0, "{st}");
    assert_eq!(st["nodes"][0]["node_id"], "n1");
    assert!(st["queues"]["unplaceable"][0].as_str().unwrap().contains("h264_nvenc"));
    let (_, h) = api.get("/api/v1/health/score");
    let factors: Vec<&str> = h["factors"].as_array().unwrap().iter().map(|f| f["factor"].as_str().unwrap()).collect();
    assert_eq!(factors, vec!["unplaceable_jobs"], "{h}");
    assert_eq!(h["score"], 90.0);
}

#[test]
fn compose_stack_is_valid_and_uses_real_flags() {
    let compose = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    for svc in ["master:", "worker:", "postgres:", "prometheus:", "grafana:", "rtmp:"] {
        assert!(compose.contains(&format!("\n  {svc}")), "compose has service {svc}");
    }
    assert!(!compose.lines().any(|l| l.starts_with("version:")), "no obsolete `version:`");
    assert!(!compose.contains(":-change-me"), "no silent default secrets");
    for secret in ["FFRTMP_API_KEY", "FFRTMP_WORKER_API_KEY", "FFRTMP_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD"] {
        assert!(compose.contains(&format!("${{{secret}:?")), "{secret} is required (${{{secret}:?…}})");
    }
    assert_eq!(compose.matches("healthcheck:").count(), 3, "master, worker and postgres have healthchecks");
    let secrets = [
        ("FFRTMP_API_KEY", "a"),
        ("FFRTMP_WORKER_API_KEY", "w"),
        ("FFRTMP_DB_PASSWORD", "p"),
        ("GRAFANA_ADMIN_PASSWORD", "g"),
    ];
    if tool("docker-compose", &["version"]) {
        let config = |with_secrets: bool| {
            let mut c = Command::new("docker-compose");
            c.args(["-f"]).arg(repo("docker-compose.yml")).args(["config", "-q"]);
            for (k, v) in secrets {
                if with_secrets {
                    c.env(k, v);
                } else {
                    c.env_remove(k);
                }
            }
            c.output().unwrap()
        };
        let out = config(true);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = config(false);
        assert!(!out.status.success(), "compose refuses to start without its secrets");
        assert!(String::from_utf8_lossy(&out.stderr).contains("FFRTMP_"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let commands: Vec<Vec<String>> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .filter_map(|c| serde_json::from_str::<Vec<String>>(c).ok())
        .filter(|c| matches!(c.first().map(String::as_str), Some("master" | "worker")))
        .collect();
    assert!(commands.len() >= 2, "master and workers run ffrtmp: {commands:?}");
    // The worker's stop grace period covers its drain.
    let worker = commands.iter().find(|c| c[0] == "worker").unwrap();
    let drain: u64 =
        worker.iter().position(|a| a == "--drain-timeout").map(|i| worker[i + 1].parse().unwrap()).unwrap();
    let section = compose.split("\n  worker:").nth(1).unwrap().split("\n  postgres:").next().unwrap();
    let grace: u64 = section
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop_grace_period: "))
        .and_then(|g| g.trim_end_matches('s').parse().ok())
        .expect("the worker has a stop_grace_period");
    assert!(grace > drain, "stop_grace_period {grace}s must exceed --drain-timeout {drain}");
    for c in commands {
        let help = Command::new(BIN).args([c[0].as_str(), "--help"]).output().unwrap();
        assert!(help.status.success(), "`ffrtmp {}` exists", c[0]);
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        for flag in c.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}\n"))
                    || help.contains(&format!("{flag} <")),
                "`ffrtmp {} {flag}` is not in --help",
                c[0]
            );
        }
    }
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    assert!(dockerfile.contains("ffmpeg"), "ffmpeg in the runtime image");
    for needed in [
        "HEALTHCHECK",
        "tini",
        "org.opencontainers.image.source",
        "COPY assets",
        "COPY Cargo.toml Cargo.lock",
        "AS gpu",
        "NVIDIA_DRIVER_CAPABILITIES=compute,video,utility",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile has {needed}");
    }
}
