//! Test harness: real `ffrtmp` processes on temp databases, driven over HTTP.
//! Every process a test starts is killed by its handle's Drop; no fixed sleeps.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_ffrtmp");

// Waiting, /proc and port helpers shared with the bench harness.
pub use ffrtmp::testkit::{free_port, pid_state, port_listening, process_state, wait_until};

pub struct TestMaster {
    pub child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    /// PostgreSQL database of this master when the suite runs on PostgreSQL.
    pub pg_url: Option<String>,
    /// Extra environment (e.g. AWS_* for a test S3 server).
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestMaster {
    /// Start a master with extra environment variables too.
    pub fn start_with_env(extra: &[&str], env: &[(String, String)]) -> TestMaster {
        let mut m = TestMaster::start_unspawned(extra);
        m.env = env.to_vec();
        m.spawn();
        m
    }

    /// Start a master on a fresh temp database with extra flags.
    pub fn start(extra: &[&str]) -> TestMaster {
        let mut m = TestMaster::start_unspawned(extra);
        m.spawn();
        m
    }

    fn start_unspawned(extra: &[&str]) -> TestMaster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let explicit = extra.contains(&"--database-url");
        let pg_url = (suite_on_postgres() && !explicit).then(new_pg_database);
        TestMaster {
            child: None,
            url: String::new(),
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            pg_url,
            env: Vec::new(),
            _tmp: Some(tmp),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("master.db")
    }

    /// The database this master uses (SQLite file, or its PostgreSQL database).
    pub fn database(&self) -> ffrtmp::db::DatabaseUrl {
        match &self.pg_url {
            Some(u) => ffrtmp::db::DatabaseUrl::Postgres(u.clone()),
            None => ffrtmp::db::DatabaseUrl::Sqlite(self.db_path()),
        }
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("master");
        if !self.args.iter().any(|a| a == "--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(["--metrics-port", "0", "--db"]).arg(self.db_path());
        if let Some(u) = &self.pg_url {
            cmd.args(["--database-url", u]);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(&self.args)
            .env("RUST_LOG", "warn")
            .env_remove("MASTER_API_KEY")
            .env_remove("FFMPEG_RTMP_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start master");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = ffrtmp::testkit::url_after(&line, "listening on ") {
                    let _ = tx.send(url);
                }
            }
        });
        self.url = rx.recv_timeout(Duration::from_secs(30)).expect("master printed its address");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn api(&self) -> Api {
        Api { base: self.url.clone(), key: None, heartbeat_interval: self.heartbeat_interval() }
    }

    /// The `--heartbeat-interval` this master asks of workers (its default: 5 s).
    pub fn heartbeat_interval(&self) -> f64 {
        let at = self.args.iter().position(|a| a == "--heartbeat-interval");
        at.and_then(|i| self.args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(5.0)
    }
}

impl Drop for TestMaster {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A tiny blocking HTTP client returning (status, JSON).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: Option<String>,
    /// Declared by `register` for nodes that play an ffrtmp worker (which declares the
    /// interval the master asks for), unless the body says otherwise.
    pub heartbeat_interval: f64,
}

impl Api {
    pub fn with_key(&self, key: &str) -> Api {
        Api { base: self.base.clone(), key: Some(key.to_string()), heartbeat_interval: self.heartbeat_interval }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{}", self.base, path)).timeout(Duration::from_secs(90));
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        decode(res)
    }

    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        decode(req.send_string(body))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }
    pub fn text(&self, path: &str) -> String {
        ureq::get(&format!("{}{}", self.base, path)).call().unwrap().into_string().unwrap()
    }

    /// Submit a job and return its id.
    pub fn submit(&self, body: Value) -> String {
        let (s, j) = self.post("/jobs", body);
        assert_eq!(s, 201, "submit: {j}");
        j["id"].as_str().unwrap().to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        let (s, j) = self.get(&format!("/jobs/{id}"));
        assert_eq!(s, 200, "get job {id}: {j}");
        j
    }

    /// A node as `GET /nodes/{id}` shows it.
    pub fn node(&self, node_id: &str) -> Value {
        let (s, n) = self.get(&format!("/nodes/{node_id}"));
        assert_eq!(s, 200, "get node {node_id}: {n}");
        n
    }

    pub fn status(&self, id: &str) -> String {
        self.job(id)["status"].as_str().unwrap().to_string()
    }

    pub fn register(&self, node_id: &str, body: Value) -> Value {
        let mut b = body;
        b["node_id"] = Value::String(node_id.into());
        if b.get("address").is_none() {
            b["address"] = Value::String(format!("{node_id}.test"));
        }
        // `"heartbeat_interval_seconds": null` plays a seed agent, which declares none.
        if b.get("heartbeat_interval_seconds").is_none() {
            b["heartbeat_interval_seconds"] = self.heartbeat_interval.into();
        }
        let (s, j) = self.post("/nodes/register", b);
        assert!(s == 201 || s == 200, "register: {s} {j}");
        j
    }

    /// Claim one job for a node (long-polling up to `wait` seconds); None if nothing came.
    pub fn claim(&self, node_id: &str, wait: f64) -> Option<Value> {
        let (s, j) = self.get(&format!("/jobs/next?node_id={node_id}&wait={wait}"));
        assert_eq!(s, 200, "claim: {j}");
        (!j["job"].is_null()).then(|| j["job"].clone())
    }

    pub fn result(&self, job: &Value, node_id: &str, status: &str, extra: Value) -> (u16, Value) {
        let mut b =
            serde_json::json!({"job_id": job["id"], "node_id": node_id, "attempt": job["attempt"], "status": status});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                b[k] = v;
            }
        }
        self.post("/results", b)
    }

    /// Raw bytes of a GET (downloads), with the response's status and headers.
    pub fn bytes(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>, Vec<(String, String)>) {
        let mut req = ureq::get(&format!("{}{}", self.base, path)).timeout(Duration::from_secs(90));
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = resp.status();
        let hs =
            resp.headers_names().into_iter().map(|h| (h.clone(), resp.header(&h).unwrap_or("").to_string())).collect();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
        (status, body, hs)
    }

    /// The job's stored outputs (`GET /jobs/{id}/outputs`).
    pub fn outputs(&self, id: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/jobs/{id}/outputs"));
        assert_eq!(s, 200, "{v}");
        v["outputs"].as_array().cloned().unwrap_or_default()
    }

    pub fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self.text("/metrics");
        text.lines()
            .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name_and_labels} not found"))
    }
}

fn decode(res: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(b: &[u8]) -> String {
    let mut h = ffrtmp::storage::Sha256::default();
    h.update(b);
    h.hex()
}

/// A job's one output, downloaded from the master (checked against its recorded size
/// and SHA-256) into a temp dir that lives as long as the value.
pub struct Fetched {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub record: Value,
}

pub fn fetch_output(api: &Api, id: &str) -> Fetched {
    let outputs = api.outputs(id);
    assert_eq!(outputs.len(), 1, "one output: {outputs:?}");
    let record = outputs[0].clone();
    let name = record["name"].as_str().unwrap();
    let (s, body, _) = api.bytes(&format!("/jobs/{id}/outputs/{name}"), &[]);
    assert_eq!(s, 200);
    assert_eq!(body.len() as u64, record["bytes"].as_u64().unwrap());
    assert_eq!(sha256_hex(&body), record["sha256"].as_str().unwrap(), "the bytes are the recorded ones");
    let dir = tmpdir();
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    Fetched { _dir: dir, path, record }
}

/// A path that exists for the life of the test.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A real `ffrtmp worker` process with its own work dir.
pub struct TestWorker {
    pub child: Option<Child>,
    pub work_dir: PathBuf,
    /// Extra environment (kept for restarts).
    pub env: Vec<(String, String)>,
    pub node_id: String,
    pub metrics_url: String,
    _tmp: Option<tempfile::TempDir>,
}

impl TestWorker {
    pub fn start(master: &TestMaster, extra: &[&str]) -> TestWorker {
        TestWorker::start_with_env(master, extra, &[])
    }

    pub fn start_with_env(master: &TestMaster, extra: &[&str], env: &[(String, String)]) -> TestWorker {
        let tmp = tempfile::tempdir().unwrap();
        let work_dir = tmp.path().join("work");
        let mut w = TestWorker {
            child: None,
            work_dir,
            env: env.to_vec(),
            node_id: String::new(),
            metrics_url: String::new(),
            _tmp: Some(tmp),
        };
        w.spawn(&master.url, extra);
        w
    }

    /// A worker of several masters (`--master a,b`).
    pub fn start_on(masters: &str, extra: &[&str]) -> TestWorker {
        let tmp = tempfile::tempdir().unwrap();
        let work_dir = tmp.path().join("work");
        let mut w = TestWorker {
            child: None,
            work_dir,
            env: Vec::new(),
            node_id: String::new(),
            metrics_url: String::new(),
            _tmp: Some(tmp),
        };
        w.spawn(masters, extra);
        w
    }

    /// Start again in the same work dir (same node id).
    pub fn restart(&mut self, master: &TestMaster, extra: &[&str]) {
        self.kill9();
        self.spawn(&master.url, extra);
    }

    fn spawn(&mut self, master: &str, extra: &[&str]) {
        let mut child = Command::new(BIN)
            .args(["worker", "--master", master, "--metrics-port", "0", "--work-dir"])
            .arg(&self.work_dir)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ffrtmp worker ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("worker started");
        self.node_id = line.split_whitespace().nth(2).unwrap().to_string();
        self.metrics_url = line.split("metrics: ").nth(1).unwrap().trim_end_matches(')').to_string();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let c = self.child.as_mut().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = c.wait().unwrap();
        self.child = None;
        st
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// ffprobe: (codec, width, height, duration seconds) of the first video stream.
pub fn probe_video(path: &std::path::Path) -> (String, u32, u32, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().unwrap_or("").to_string(),
        s["width"].as_u64().unwrap_or(0) as u32,
        s["height"].as_u64().unwrap_or(0) as u32,
        v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0),
    )
}

/// PIDs of ffmpeg processes whose command line mentions `needle`.
pub fn ffmpeg_pids(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("ffmpeg ") && cmd.contains(needle) {
            // Skip zombies: they hold no resources and are being reaped.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if process_state(&stat) != Some('Z') {
                out.push(pid);
            }
        }
    }
    out
}

/// Wait for a job to reach a terminal state and return it.
pub fn wait_terminal(api: &Api, id: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    wait_until(timeout, &format!("job {id} to finish"), || {
        last = api.job(id);
        matches!(last["status"].as_str(), Some("completed" | "failed" | "canceled" | "rejected"))
    });
    last
}

impl TestMaster {
    /// Start on a fixed port (kept across restarts) with extra flags.
    pub fn start_on(port: u16, db_dir: &std::path::Path, extra: &[&str]) -> TestMaster {
        let mut args: Vec<String> = vec!["--port".into(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let pg_url = suite_on_postgres().then(new_pg_database);
        let mut m = TestMaster {
            child: None,
            url: String::new(),
            dir: db_dir.to_path_buf(),
            args,
            pg_url,
            env: Vec::new(),
            _tmp: None,
        };
        m.spawn();
        m
    }

    /// One of several masters on one PostgreSQL database (`url`), on a fixed port so
    /// that it comes back at the same address.
    pub fn start_ha(port: u16, url: &str, extra: &[&str]) -> TestMaster {
        let tmp = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec!["--port".into(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut m = TestMaster {
            child: None,
            url: String::new(),
            dir: tmp.path().to_path_buf(),
            args,
            pg_url: Some(url.to_string()),
            env: Vec::new(),
            _tmp: Some(tmp),
        };
        m.spawn();
        m
    }

    /// The exit code if the master process has ended (it is then forgotten).
    pub fn exit_code(&mut self) -> Option<i32> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(st.code().unwrap_or(-1))
    }

    /// Start again (after `kill9`) with the same flags and database.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// kill -9 and start again on the same database.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let c = self.child.as_mut().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = c.wait().unwrap();
        self.child = None;
        st
    }
}

// ----- PostgreSQL ---------------------------------------------------------------------

/// The suite runs on PostgreSQL when FFRTMP_TEST_BACKEND=postgres.
pub fn suite_on_postgres() -> bool {
    std::env::var("FFRTMP_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

struct PgServer {
    admin_url: String,
}

static PG: std::sync::OnceLock<Option<PgServer>> = std::sync::OnceLock::new();
static PG_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

extern "C" fn stop_pg() {
    if let Some(dir) = PG_DIR.lock().ok().and_then(|d| d.clone()) {
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!("{}/pg_ctl -D {}/data -m immediate -w stop", pg_bin(), dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn pg_bin() -> String {
    std::env::var("FFRTMP_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// A throwaway PostgreSQL server for this test process (initdb into a temp dir, pg_ctl
/// on a free loopback port, stopped at exit), or FFRTMP_TEST_PG_URL when given.
/// None when neither is possible (not root, or no PostgreSQL installed).
pub fn pg_admin_url() -> Option<String> {
    PG.get_or_init(|| {
        if let Ok(u) = std::env::var("FFRTMP_TEST_PG_URL") {
            return Some(PgServer { admin_url: u });
        }
        let bin = pg_bin();
        if unsafe { libc::geteuid() } != 0 || !std::path::Path::new(&format!("{bin}/initdb")).exists() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("ffrtmp-test-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let _ = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status();
        let port = free_port();
        let su = |cmd: String| {
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c"])
                .arg(cmd)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let d = dir.display();
        if !su(format!("{bin}/initdb -D {d}/data -U postgres --auth=trust --no-sync")) {
            return None;
        }
        *PG_DIR.lock().unwrap() = Some(dir.clone());
        unsafe { libc::atexit(stop_pg) };
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={d} -c fsync=off -c max_connections=600"
        );
        if !su(format!("{bin}/pg_ctl -D {d}/data -l {d}/server.log -o '{opts}' -w start")) {
            return None;
        }
        Some(PgServer { admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres") })
    })
    .as_ref()
    .map(|s| s.admin_url.clone())
}

/// The test PostgreSQL server's admin URL, or None (the test is skipped) where there
/// can be none — never in CI.
pub fn pg_or_skip() -> Option<String> {
    let url = pg_admin_url();
    if url.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to start PostgreSQL (root + postgresql-15)");
        eprintln!("skipped: no PostgreSQL (needs root and PostgreSQL 15, or FFRTMP_TEST_PG_URL)");
    }
    url
}

/// A fresh database on the test server.
pub fn new_pg_database() -> String {
    let admin =
        pg_admin_url().expect("FFRTMP_TEST_BACKEND=postgres needs root and PostgreSQL 15 (or FFRTMP_TEST_PG_URL)");
    let name = format!("ffrtmp_t_{}", uuid_simple());
    ffrtmp::db::create_postgres_database(&admin, &name).expect("create test database")
}

fn uuid_simple() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A real RTMP server for one stream: `ffmpeg -listen 1` on a free loopback port,
/// copying what it receives into `out`. Returns the process (wait on it) and the URL.
pub fn rtmp_listener(out: &std::path::Path, path: &str) -> (Child, String) {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/{path}");
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-listen", "1", "-i", &url, "-c", "copy", "-y"])
        .arg(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg listener");
    wait_until(Duration::from_secs(10), "rtmp listener", || port_listening(port));
    (child, url)
}
