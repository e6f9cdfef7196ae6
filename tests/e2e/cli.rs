//! Issue 5: the real `ffrtmp` binary as an operator uses it, against a real master.

use crate::harness::*;
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;

fn cli(master: &str, args: &[&str]) -> Output {
    cli_env(args, &[("MASTER_URL", master)], None)
}

fn cli_env(args: &[&str], env: &[(&str, &str)], home: Option<&std::path::Path>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("MASTER_URL")
        .env_remove("FFRTMP_MASTER_URL")
        .env_remove("MASTER_API_KEY")
        .env_remove("FFRTMP_API_KEY")
        .env_remove("FFRTMP_CONFIG")
        .env("HOME", home.map(|h| h.to_path_buf()).unwrap_or_else(|| tmpdir().keep()));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn every_command_in_table_and_json() {
    let m = TestMaster::start(&[]);
    let u = m.url.as_str();
    let api = m.api();
    api.register("n1", json!({"name": "box-1", "cpu_threads": 4, "cpu_model": "EPYC", "encoders": ["libx264"]}));

    let o = cli(
        u,
        &[
            "jobs",
            "submit",
            "--scenario",
            "cli-1",
            "--codec",
            "h264",
            "--resolution",
            "160x90",
            "--duration",
            "1",
            "--queue",
            "live",
            "--priority",
            "high",
            "--param",
            "qoe=true",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Job submitted: #1"), "{}", stdout(&o));
    let j = json_out(&cli(u, &["jobs", "submit", "--scenario", "cli-2", "-o", "json", "--idempotency-key", "k1"]));
    assert_eq!(j["sequence_number"], 2);
    let again = json_out(&cli(u, &["jobs", "submit", "--scenario", "cli-2", "-o", "json", "--idempotency-key", "k1"]));
    assert_eq!(again["id"], j["id"], "idempotent submit");
    let first = api.job("1");
    assert_eq!((first["queue"].as_str(), first["parameters"]["qoe"].as_bool()), (Some("live"), Some(true)));

    let o = cli(u, &["jobs", "list"]);
    assert!(stdout(&o).contains("cli-1") && stdout(&o).contains("Total jobs: 2"), "{}", stdout(&o));
    let l = json_out(&cli(u, &["jobs", "list", "--queue", "live", "--output", "json"]));
    assert_eq!(l["count"], 1);
    let l = json_out(&cli(u, &["jobs", "list", "--limit", "1", "-o", "json"]));
    let cursor = l["next_cursor"].as_str().unwrap().to_string();
    let l2 = json_out(&cli(u, &["jobs", "list", "--limit", "1", "--cursor", &cursor, "-o", "json"]));
    assert_eq!(l2["jobs"][0]["sequence_number"], 1);

    let o = cli(u, &["jobs", "status", "1"]);
    assert!(stdout(&o).contains("cli-1") && stdout(&o).contains("pending"), "{}", stdout(&o));
    assert_eq!(json_out(&cli(u, &["jobs", "status", "1", "-o", "json"]))["scenario"], "cli-1");

    let job = api.claim("n1", 5.0).unwrap();
    let id = job["id"].as_str().unwrap();
    let o = cli(u, &["jobs", "pause", id]);
    assert_eq!(stdout(&o).trim(), format!("✓ Job {id} paused"));
    let r = json_out(&cli(u, &["jobs", "resume", id, "-o", "json"]));
    assert_eq!(r["status"], "resumed");
    let o = cli(u, &["jobs", "cancel", id]);
    assert_eq!(stdout(&o).trim(), format!("✓ Job {id} canceled"));
    let o = cli(u, &["jobs", "pause", id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid_transition") && stderr(&o).contains("canceled"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one clear line");
    let o = cli(u, &["jobs", "retry", id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("queued again"));
    let o = cli(u, &["jobs", "logs", id]);
    assert!(stdout(&o).contains(&format!("=== Logs for job {id} ===")));
    assert_eq!(json_out(&cli(u, &["jobs", "logs", id, "-o", "json"]))["job_id"], id);

    let o = cli(u, &["nodes", "list"]);
    assert!(stdout(&o).contains("box-1") && stdout(&o).contains("Total nodes: 1"), "{}", stdout(&o));
    assert_eq!(json_out(&cli(u, &["nodes", "list", "-o", "json"]))["count"], 1);
    let o = cli(u, &["nodes", "describe", "n1"]);
    for want in ["Encoders (probed)", "libx264", "Last heartbeat", "Running jobs"] {
        assert!(stdout(&o).contains(want), "{want}: {}", stdout(&o));
    }
    assert_eq!(json_out(&cli(u, &["nodes", "describe", "n1", "-o", "json"]))["name"], "box-1");
    let o = cli(u, &["nodes", "drain", "n1"]);
    assert!(stdout(&o).contains("draining"), "{}", stdout(&o));
    let un = json_out(&cli(u, &["nodes", "undrain", "n1", "-o", "json"]));
    assert_eq!(un["status"], "available", "{un}");
    let o = cli(u, &["nodes", "remove", "n1"]);
    assert!(stdout(&o).contains("removed"), "{}", stderr(&o));
    let o = cli(u, &["nodes", "describe", "n1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("404"));
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let m = TestMaster::start(&["--api-key", "sekret"]);
    // Unreachable master.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let o = cli(&dead, &["jobs", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: cannot reach the master"), "{}", stderr(&o));
    // Missing key → 401.
    let o = cli(&m.url, &["nodes", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    // Bad value → 400 naming valid values.
    let o = cli_env(
        &["jobs", "submit", "--queue", "urgent"],
        &[("MASTER_URL", &m.url), ("MASTER_API_KEY", "sekret")],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("live, default, batch"), "{}", stderr(&o));
    // Bad flag → clap's usage error, exit 2.
    let o = cli(&m.url, &["jobs", "list", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = cli("ftp://x", &["jobs", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must start with http"));
    let o = cli_env(
        &["jobs", "submit", "--param", "novalue"],
        &[("MASTER_URL", &m.url), ("MASTER_API_KEY", "sekret")],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn settings_precedence_flag_env_file_default() {
    let good = TestMaster::start(&["--api-key", "good-key"]);
    let dead = "http://127.0.0.1:9"; // discard port: nothing listens
    let home = tmpdir();
    std::fs::create_dir_all(home.path().join(".config/ffrtmp")).unwrap();
    std::fs::write(
        home.path().join(".config/ffrtmp/config.toml"),
        format!("master_url = \"{}\"\napi_key = \"good-key\"\noutput = \"json\"\n", good.url),
    )
    .unwrap();
    // File alone: works, and its output setting applies.
    let o = cli_env(&["nodes", "list"], &[], Some(home.path()));
    assert_eq!(json_out(&o)["count"], 0);
    // Env beats file.
    let o = cli_env(&["nodes", "list"], &[("MASTER_URL", dead)], Some(home.path()));
    assert_eq!(o.status.code(), Some(1), "env MASTER_URL must win over the file");
    let o = cli_env(&["nodes", "list"], &[("MASTER_API_KEY", "bad-key")], Some(home.path()));
    assert!(stderr(&o).contains("401"), "env key wins: {}", stderr(&o));
    // Flag beats env.
    let o = cli_env(&["nodes", "list", "--master", &good.url], &[("MASTER_URL", dead)], Some(home.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli_env(
        &["nodes", "list", "--api-key", "good-key", "-o", "table"],
        &[("MASTER_API_KEY", "bad-key")],
        Some(home.path()),
    );
    assert!(stdout(&o).contains("No nodes registered"), "{}", stderr(&o));
    // Default: no file, no env → http://127.0.0.1:8080 (named in the error).
    let empty = tmpdir();
    let o = cli_env(&["nodes", "list"], &[], Some(empty.path()));
    if !o.status.success() {
        assert!(stderr(&o).contains("cannot reach the master") || stderr(&o).contains("8080"), "{}", stderr(&o));
    }
    // A broken config file is reported, not ignored.
    std::fs::write(home.path().join(".config/ffrtmp/config.toml"), "master_url = [").unwrap();
    let o = cli_env(&["nodes", "list"], &[], Some(home.path()));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad config file"));
}

#[test]
fn follow_ends_on_completed_failed_and_canceled() {
    let m = TestMaster::start(&[]);
    let u = m.url.clone();
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);
    // Completed → exit 0.
    let o = cli(&u, &["jobs", "submit", "--resolution", "160x90", "--fps", "10", "--duration", "1", "--follow"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("completed"));
    // Failed (input outside the worker's roots: permanent) → exit 3.
    let o = cli(&u, &["jobs", "submit", "--input", "/etc/hostname", "--follow", "-o", "json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["status"], "failed");
    // Canceled while followed → exit 3.
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 20, "realtime": true}}));
    let follower = {
        let (u, id) = (u.clone(), id.clone());
        std::thread::spawn(move || cli(&u, &["jobs", "status", &id, "--follow"]))
    };
    wait_until(Duration::from_secs(30), "job running", || api.status(&id) == "processing");
    api.post(&format!("/jobs/{id}/cancel"), json!({}));
    let o = follower.join().unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("canceled"), "{}", stdout(&o));
    // Rejected (never placeable, with rejection on) ends too.
    let m2 = TestMaster::start(&["--reject-unplaceable"]);
    m2.api().register("cpu", json!({"encoders": ["libx264"]}));
    let o = cli(&m2.url, &["jobs", "submit", "--codec", "hevc_nvenc", "--follow"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("rejected"));
}

#[test]
fn submit_download_and_list_outputs() {
    let m = TestMaster::start(&[]);
    let u = m.url.clone();
    let _w = TestWorker::start(&m, &[]);
    let dir = tmpdir();
    let dest = dir.path().join("got");
    let o =
        cli(&u, &["jobs", "submit", "--resolution", "160x90", "--fps", "10", "--duration", "1", "--download"]).status;
    assert_eq!(o.code(), Some(2), "--download needs a directory");
    let d = dest.to_str().unwrap();
    let o = cli(&u, &["jobs", "submit", "--resolution", "160x90", "--fps", "10", "--duration", "1", "--download", d]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let file = dest.join("output.mp4");
    assert!(stdout(&o).contains(&format!("✓ {}", file.display())), "{}", stdout(&o));
    assert_eq!(probe_video(&file).0, "h264");
    let id = m.api().get("/jobs?limit=1").1["jobs"][0]["id"].as_str().unwrap().to_string();
    let recorded = m.api().outputs(&id)[0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha256_hex(&std::fs::read(&file).unwrap()), recorded);
    assert!(!dest.join(".output.mp4.part").exists());
    // Listing, as a table and as JSON.
    let o = cli(&u, &["jobs", "outputs", &id, "-o", "table"]);
    assert!(stdout(&o).contains("output.mp4") && stdout(&o).contains("video/mp4"), "{}", stdout(&o));
    let o = cli(&u, &["jobs", "outputs", &id, "-o", "json"]);
    assert_eq!(json_out(&o)["outputs"][0]["sha256"], recorded.as_str());
    // Download by name into another dir; a missing name is a clear error.
    let again = dir.path().join("again");
    let o = cli(&u, &["jobs", "download", &id, "--name", "output.mp4", "--dir", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(again.join("output.mp4")).unwrap(), std::fs::read(&file).unwrap());
    let o = cli(&u, &["jobs", "download", &id, "--name", "nope.mp4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no output named 'nope.mp4'"), "{}", stderr(&o));
}

/// The README's two commands are the ones tested here.
#[test]
fn readme_commands_are_the_tested_ones() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = "cargo run --release -- up --demo";
    assert!(readme.contains(&format!("\n{start}\n")), "README's first command must be `{start}`");
    let test_cmd = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/test-command")).unwrap();
    assert!(
        readme.contains(&format!("\n{}\n", test_cmd.trim())),
        "README must give the test command `{}`",
        test_cmd.trim()
    );
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.contains(".ci/test-command"), ".ci/run runs the README's test command");
    // Run the first command's arguments on a free port and a temp dir.
    let dir = tmpdir();
    let o = Command::new(BIN).args(["up", "--demo", "--port", "0", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let path = out.lines().find_map(|l| l.strip_prefix("Output: ")).expect("prints where the output is");
    assert!(path.starts_with(&dir.path().join("artifacts").display().to_string()), "stored by the master: {path}");
    assert!(out.contains("ffrtmp jobs download "), "prints the download command: {out}");
    let (codec, w, h, d) = probe_video(std::path::Path::new(path));
    assert_eq!((codec.as_str(), w, h), ("h264", 1280, 720));
    assert!((d - 8.0).abs() < 0.2);
}

#[test]
fn templates_and_a_graph_from_the_command_line() {
    let m = TestMaster::start(&[]);
    let u = m.url.clone();
    let _w = TestWorker::start(&m, &[]);
    let dir = tmpdir();
    let params = dir.path().join("small.json");
    std::fs::write(&params, r#"{"resolution": "160x90", "fps": 10, "duration": 1, "preset": "ultrafast"}"#).unwrap();
    let o = cli(&u, &["templates", "create", "small", "--file", params.to_str().unwrap(), "--description", "tiny"]);
    assert!(stdout(&o).contains("✓ Template small version 1 stored"), "{}{}", stdout(&o), stderr(&o));
    let o = cli(&u, &["templates", "list"]);
    assert!(stdout(&o).contains("hls-ladder") && stdout(&o).contains("small"), "{}", stdout(&o));
    assert_eq!(json_out(&cli(&u, &["templates", "show", "small", "-o", "json"]))["parameters"]["fps"], 10);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[1]").unwrap();
    let o = cli(&u, &["templates", "create", "x", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A job from the template, then one that waits for it; follow the second.
    let first = json_out(&cli(&u, &["jobs", "submit", "--template", "small", "-o", "json"]));
    let id = first["id"].as_str().unwrap();
    let o = cli(&u, &["jobs", "submit", "--template", "small", "--after", id, "--follow", "-o", "json"]);
    let second = json_out(&o);
    assert_eq!(second["status"], "completed");
    assert_eq!(second["after"], json!([id]));
    assert_eq!(m.api().status(id), "completed");
    let o = cli(&u, &["templates", "delete", "small"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cli(&u, &["templates", "show", "small"]).status.code(), Some(1));
    // A parent's children, listed by the CLI.
    let p = m.api().submit(json!({"children": [{"ref": "a", "template": "mp4-1080p", "parameters": {"duration": 1, "preset": "ultrafast", "resolution": "160x90"}}]}));
    let o = cli(&u, &["jobs", "status", &p, "--follow"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = json_out(&cli(&u, &["jobs", "list", "--parent", &p, "-o", "json"]));
    assert_eq!(listed["count"], 1);
}
