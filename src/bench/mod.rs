//! `ffrtmp bench`: the performance harness (P1–P18). It starts real master and worker
//! processes (this same binary) on loopback, drives them over HTTP, prints a table and
//! writes every figure as JSON. Targets are judged here, never in `cargo test`;
//! `--quick` runs every figure at small sizes so the harness never rots.

mod dispatch;
mod encodes;
mod p10;
mod p11;
mod p12;
mod p13;
mod p14;
mod p15;
mod p16;
mod p17;
mod p18;

use crate::db::jobs::JobRow;
use crate::db::{self, now_micros};
use crate::domain::argv::{self, InputSource, OutputTarget};
use crate::domain::params::parse_job_spec;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use crate::testkit::{Proc, SchedTimes, cpu_seconds, rss_bytes, sched_times, spawn_ready, url_after};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Small sizes and short runs (CI): checks the harness works, judges nothing.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/results/latest.json")]
    pub out: PathBuf,
    /// Run only these figures (e.g. --only P1,P3).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Also run P1–P5 and P18 on PostgreSQL, and P16 (failover of two masters): a URL of an
    /// account that may create databases
    /// (e.g. postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long)]
    pub postgres: Option<String>,
}

/// Where a benchmarked master keeps its data.
#[derive(Clone)]
enum Store {
    Sqlite,
    Postgres(String),
}

impl Store {
    fn label(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// A fresh database for one measurement.
    fn database(&self, tmp: &Path, name: &str) -> anyhow::Result<db::DatabaseUrl> {
        Ok(match self {
            Store::Sqlite => db::DatabaseUrl::Sqlite(tmp.join(format!("{name}.db"))),
            Store::Postgres(admin) => {
                let n = format!(
                    "ffrtmp_bench_{}_{}",
                    name.replace('-', "_"),
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                db::DatabaseUrl::Postgres(db::create_postgres_database(admin, &n)?)
            }
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// e.g. ">= 10000"; absent for figures reported without a target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Judged only in full runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    pub detail: Value,
}

struct Report {
    quick: bool,
    figures: Vec<Figure>,
}

impl Report {
    fn add(
        &mut self,
        id: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Option<(&str, f64)>,
        detail: Value,
    ) {
        let (target_s, pass) = match target {
            Some((op, t)) => {
                let ok = match op {
                    ">=" => value >= t,
                    _ => value <= t,
                };
                (Some(format!("{op} {t}")), (!self.quick).then_some(ok))
            }
            None => (None, None),
        };
        let name = name.into();
        eprintln!("  {id} {name}: {value:.3} {unit}");
        self.figures.push(Figure { id, name, value, unit, target: target_s, pass, detail });
    }
}

/// The binary whose masters and workers are measured: this one, or the build that
/// `FFRTMP_BENCH_SUBJECT` names — so an older build is measured side by side with this
/// one by the very same harness (same sizes, clocks and polling).
pub(super) fn subject() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("FFRTMP_BENCH_SUBJECT") {
        Some(p) if !p.is_empty() => Ok(p.into()),
        _ => Ok(std::env::current_exe()?),
    }
}

fn spawn(args: &[&str], ready_prefix: &str) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(subject()?);
    cmd.args(args).env("RUST_LOG", "error").stderr(Stdio::null());
    spawn_ready(cmd, ready_prefix, Duration::from_secs(600)).map_err(|e| anyhow::anyhow!("{args:?} did not start: {e}"))
}

struct Master {
    proc: Proc,
    url: String,
}

fn master(db: &Path, extra: &[&str]) -> anyhow::Result<Master> {
    master_on(&db::DatabaseUrl::Sqlite(db.to_path_buf()), extra)
}

fn master_on(database: &db::DatabaseUrl, extra: &[&str]) -> anyhow::Result<Master> {
    let url = match database {
        db::DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        db::DatabaseUrl::Postgres(u) => u.clone(),
    };
    let mut args =
        vec!["master", "--port", "0", "--metrics-port", "0", "--database-url", &url, "--retention-days", "0"];
    // With PostgreSQL, outputs go to the temp dir, not beside the working directory's
    // `--db` default (a SQLite master keeps them beside its file, in the bench's dir).
    let artifacts = std::env::temp_dir().join("ffrtmp-bench-artifacts").to_string_lossy().to_string();
    if database.is_postgres() && !extra.contains(&"--artifact-dir") {
        args.extend_from_slice(&["--artifact-dir", &artifacts]);
    }
    args.extend_from_slice(extra);
    let proc = spawn(&args, "ffrtmp master listening on ")?;
    let url = url_after(&proc.line, "listening on ").unwrap_or_default();
    Ok(Master { proc, url })
}

fn worker(url: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    let d = dir.to_string_lossy().to_string();
    let mut args =
        vec!["worker", "--master", url, "--work-dir", &d, "--metrics-port", "0", "--metrics-bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    spawn(&args, "ffrtmp worker ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms_stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&v, 0.5), percentile(&v, 0.99), v.last().copied().unwrap_or(f64::NAN))
}

fn http() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(120)).connector(awc::Connector::new().limit(512)).finish()
}

async fn post(c: &awc::Client, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let mut r = c.post(url).send_json(body).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = r.body().limit(64 << 20).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((r.status().as_u16(), serde_json::from_slice(&b).unwrap_or(Value::Null)))
}

async fn get(c: &awc::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let mut r = c.get(url).send().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = r.body().limit(64 << 20).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((r.status().as_u16(), serde_json::from_slice(&b).unwrap_or(Value::Null)))
}

async fn metrics_text(c: &awc::Client, base: &str) -> String {
    let Ok(mut r) = c.get(format!("{base}/metrics")).send().await else { return String::new() };
    String::from_utf8_lossy(&r.body().limit(64 << 20).await.unwrap_or_default()).to_string()
}

async fn metric(c: &awc::Client, base: &str, name: &str) -> f64 {
    value_of(&metrics_text(c, base).await, name)
}

/// The sum of `name`'s series labelled with `route` in a metrics text.
fn route_sum(text: &str, name: &str, route: &str) -> f64 {
    let label = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the unlabelled (or exactly labelled) series `name` in a metrics text.
fn value_of(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `clients` concurrent loops of `op` for `duration`; returns (ok count, latencies ms).
async fn load<F, Fut>(clients: usize, duration: Duration, op: F) -> (usize, Vec<f64>)
where
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = bool> + 'static,
{
    let lat = Rc::new(RefCell::new(Vec::new()));
    let ok = Rc::new(RefCell::new(0usize));
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (lat, ok, op) = (lat.clone(), ok.clone(), op.clone());
        tasks.push(actix_rt::spawn(async move {
            let mut i = 0;
            while Instant::now() < end {
                let t = Instant::now();
                if op(c * 1_000_000 + i).await {
                    *ok.borrow_mut() += 1;
                    lat.borrow_mut().push(t.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = *ok.borrow();
    let v = lat.borrow().clone();
    (n, v)
}

async fn submit_many(c: &awc::Client, base: &str, n: usize, clients: usize) -> anyhow::Result<()> {
    let next = Rc::new(RefCell::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, base, next) = (c.clone(), base.to_string(), next.clone());
        tasks.push(actix_rt::spawn(async move {
            loop {
                let i = {
                    let mut n = next.borrow_mut();
                    *n += 1;
                    *n
                };
                if i > n {
                    break;
                }
                let _ = post(&c, &format!("{base}/jobs"), &json!({"scenario": format!("bench-{i}")})).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn wait_metric(
    c: &awc::Client,
    base: &str,
    name: &str,
    at_least: f64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if metric(c, base, name).await >= at_least {
            return Ok(start.elapsed());
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{name} did not reach {at_least} within {timeout:?}")
}

/// The ids of the nodes registered with the master at `base`, once there are `count`.
async fn registered_nodes(c: &awc::Client, base: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let (_, list) = get(c, &format!("{base}/nodes")).await?;
        let ids: Vec<String> = list["nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["id"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        if ids.len() >= count {
            return Ok(ids);
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{count} nodes did not register within {timeout:?}")
}

/// Write `total` jobs (of which `queued` pending, the rest completed) straight into a
/// database, as a master would have left them.
pub(super) fn prefill(database: &db::DatabaseUrl, total: usize, queued: usize) -> anyhow::Result<()> {
    use diesel::prelude::*;
    let pool = db::open(database, db::Synchronous::Normal, 1)?;
    let mut conn = pool.get()?;
    let now = now_micros();
    let mut i = 0;
    while i < total {
        // 31 bound columns a row: 500 rows stay under SQLite's 32,766 variables.
        let n = (total - i).min(500);
        let rows: Vec<JobRow> = (i..i + n)
            .map(|k| {
                let pending = k >= total - queued;
                JobRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    scenario: format!("prefill-{k}"),
                    confidence: "auto".into(),
                    queue: [QueueName::Live, QueueName::Default, QueueName::Batch][k % 3],
                    priority: [Priority::High, Priority::Medium, Priority::Low][k % 3],
                    parameters: r#"{"codec":"h264"}"#.into(),
                    status: if pending { JobState::Pending } else { JobState::Completed },
                    max_retries: 3,
                    created_at: now,
                    queued_at: now,
                    completed_at: (!pending).then_some(now),
                    updated_at: now,
                    ..JobRow::default()
                }
            })
            .collect();
        // Batch inserts are backend-specific in diesel (not on the multi-backend type).
        match &mut *conn {
            db::AnyConnection::Sqlite(c) => c.transaction::<_, diesel::result::Error, _>(|c| {
                diesel::insert_into(db::schema::jobs::table).values(&rows).execute(c)?;
                Ok(())
            })?,
            db::AnyConnection::Postgresql(c) => c.transaction::<_, diesel::result::Error, _>(|c| {
                diesel::insert_into(db::schema::jobs::table).values(&rows).execute(c)?;
                Ok(())
            })?,
        };
        i += n;
    }
    Ok(())
}

/// P4 (/metrics latency by stored jobs) and P5 (RSS per queued job, idle RSS).
async fn p4_p5(r: &mut Report, tmp: &Path, store: &Store, run_p4: bool, run_p5: bool) -> anyhow::Result<()> {
    let c = http();
    let b = store.label();
    if run_p4 {
        let sizes: &[(usize, usize)] = if r.quick {
            &[(2_000, 200), (20_000, 2_000)]
        } else {
            &[(10_000, 1_000), (100_000, 10_000), (1_000_000, 100_000)]
        };
        // All stores are served at once and sampled round-robin, so machine noise falls
        // on every size alike and the ratio compares the stores, not the moments.
        let mut masters = Vec::new();
        for &(total, queued) in sizes {
            let db = store.database(tmp, &format!("p4-{total}"))?;
            let d = db.clone();
            actix_rt::task::spawn_blocking(move || prefill(&d, total, queued)).await??;
            let m = master_on(&db, &[])?;
            // Steady state: start-up has indexed every queued job.
            wait_metric(&c, &m.url, "ffrtmp_queue_length", queued as f64, Duration::from_secs(600)).await?;
            masters.push(m);
        }
        let (warmup, reps) = if r.quick { (10, 50) } else { (200, 5_000) };
        let mut lat = vec![Vec::new(); masters.len()];
        let mut size = vec![0; masters.len()];
        for rep in 0..warmup + reps {
            for (i, m) in masters.iter().enumerate() {
                let t = Instant::now();
                let mut resp = c.get(format!("{}/metrics", m.url)).send().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                size[i] = resp.body().limit(64 << 20).await.map_err(|e| anyhow::anyhow!("{e}"))?.len();
                if rep >= warmup {
                    lat[i].push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        drop(masters);
        let mut p99s = Vec::new();
        for ((&(total, queued), lat), size) in sizes.iter().zip(lat).zip(size) {
            let (p50, p99, _) = ms_stats(lat);
            p99s.push(p99);
            r.add(
                "P4",
                format!("[{b}] GET /metrics p99, {total} jobs stored ({queued} queued)"),
                p99,
                "ms",
                Some(("<=", 25.0)),
                json!({"p50_ms": p50, "bytes": size}),
            );
        }
        let spread = p99s.iter().cloned().fold(f64::MIN, f64::max) / p99s.iter().cloned().fold(f64::MAX, f64::min);
        r.add(
            "P4",
            format!("[{b}] /metrics p99 largest/smallest store"),
            spread,
            "ratio",
            Some(("<=", 1.1)),
            json!({}),
        );
    }
    if run_p5 {
        let idle = master_on(&store.database(tmp, "p5-idle")?, &[])?;
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = rss_bytes(idle.proc.child.id());
        drop(idle);
        r.add("P5", format!("[{b}] idle master RSS"), idle_rss as f64 / 1e6, "MB", Some(("<=", 50.0)), json!({}));
        let n = if r.quick { 50_000 } else { 1_000_000 };
        let db = store.database(tmp, "p5")?;
        let d = db.clone();
        actix_rt::task::spawn_blocking(move || prefill(&d, n, n)).await??;
        let m = master_on(&db, &[])?;
        wait_metric(&c, &m.url, "ffrtmp_queue_length", n as f64, Duration::from_secs(600)).await?;
        let rss = rss_bytes(m.proc.child.id());
        let per = (rss.saturating_sub(idle_rss)) as f64 / n as f64;
        r.add(
            "P5",
            format!("[{b}] RSS per queued job, {n} queued"),
            per,
            "bytes",
            Some(("<=", 256.0)),
            json!({"rss_mb": rss as f64 / 1e6}),
        );
    }
    Ok(())
}

/// P9: progress fan-in and database writes per job.
async fn p9(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let (jobs, secs) = if r.quick { (100, 2.0) } else { (1000, 10.0) };
    let m = master(&tmp.join("p9.db"), &[])?;
    let c = http();
    post(
        &c,
        &format!("{}/nodes/register", m.url),
        &json!({"node_id": "p9", "encoders": ["libx264"], "max_concurrent_jobs": 1024}),
    )
    .await?;
    submit_many(&c, &m.url, jobs, 32).await?;
    let mut ids = Vec::new();
    while ids.len() < jobs {
        let (_, v) = get(&c, &format!("{}/jobs/next?node_id=p9&wait=1&max=64", m.url)).await?;
        for j in v["jobs"].as_array().into_iter().flatten() {
            ids.push((j["id"].as_str().unwrap_or_default().to_string(), j["attempt"].as_i64().unwrap_or(1)));
        }
    }
    let writes_before = metric(&c, &m.url, "ffrtmp_db_writes_total").await;
    let ids = Rc::new(ids);
    let (cc, base) = (c.clone(), m.url.clone());
    let (n, _) = load(32, Duration::from_secs_f64(secs), move |i| {
        let (c, base, ids) = (cc.clone(), base.clone(), ids.clone());
        async move {
            let (id, attempt) = &ids[i % ids.len()];
            let body = json!({"node_id": "p9", "attempt": attempt, "percent": (i % 100) as f64, "fps": 30.0});
            matches!(post(&c, &format!("{base}/jobs/{id}/progress"), &body).await, Ok((200, _)))
        }
    })
    .await;
    let writes = metric(&c, &m.url, "ffrtmp_db_writes_total").await - writes_before;
    r.add(
        "P9",
        "progress updates absorbed per second",
        n as f64 / secs,
        "updates/s",
        Some((">=", 25_000.0)),
        json!({"updates": n}),
    );
    let per_job_per_5s = writes / jobs as f64 / (secs / 5.0);
    r.add(
        "P9",
        "database writes per job per 5 s under progress load",
        per_job_per_5s,
        "writes",
        Some(("<=", 1.0)),
        json!({"writes": writes}),
    );
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let tmp = tempfile_dir()?;
    let mut r = Report { quick: args.quick, figures: Vec::new() };
    let want = |id: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let have_ffmpeg = std::process::Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).status().is_ok();
    eprintln!("ffrtmp bench ({}), work dir {}", if args.quick { "quick" } else { "full" }, tmp.display());
    let mut stores = vec![Store::Sqlite];
    if let Some(pg) = &args.postgres {
        stores.push(Store::Postgres(pg.clone()));
    }
    for store in &stores {
        if want("P1") {
            dispatch::p1(&mut r, &tmp, store).await?;
        }
        if want("P2") {
            dispatch::p2(&mut r, &tmp, store).await?;
        }
        if want("P18") {
            p18::p18(&mut r, &tmp, store).await?;
        }
        if want("P3") {
            dispatch::p3(&mut r, &tmp, store).await?;
        }
        if want("P4") || want("P5") {
            p4_p5(&mut r, &tmp, store, want("P4"), want("P5")).await?;
        }
    }
    if want("P6") && have_ffmpeg {
        encodes::p6(&mut r, &tmp).await?;
    }
    if want("P7") && have_ffmpeg {
        encodes::p7(&mut r, &tmp).await?;
    }
    if want("P8") {
        encodes::p8(&mut r, &tmp).await?;
    }
    if want("P9") {
        p9(&mut r, &tmp).await?;
    }
    if want("P10") {
        p10::p10(&mut r, &tmp).await?;
    }
    if want("P11") && have_ffmpeg {
        p11::p11(&mut r, &tmp).await?;
    }
    if want("P12") && have_ffmpeg {
        p12::p12(&mut r, &tmp).await?;
    }
    if want("P13") {
        p13::p13(&mut r, &tmp).await?;
    }
    if want("P14") {
        p14::p14(&mut r, &tmp).await?;
    }
    if want("P15") {
        p15::p15(&mut r, &tmp).await?;
    }
    // P17 also measures P9's batched form.
    if want("P17") || want("P9") {
        p17::p17(&mut r, &tmp).await?;
    }
    if want("P16")
        && let Some(pg) = &args.postgres
    {
        p16::p16(&mut r, &tmp, pg).await?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(vec!["", "figure", "value", "target", "result"]);
    for f in &r.figures {
        t.add_row(vec![
            f.id.to_string(),
            f.name.clone(),
            format!("{:.3} {}", f.value, f.unit),
            f.target.clone().map(|x| format!("{x} {}", f.unit)).unwrap_or_default(),
            match f.pass {
                Some(true) => "pass".into(),
                Some(false) => "FAIL".into(),
                None => {
                    if r.quick {
                        "(quick: not judged)".into()
                    } else {
                        String::new()
                    }
                }
            },
        ]);
    }
    println!("{t}");
    let doc = json!({
        "quick": r.quick,
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "version": env!("CARGO_PKG_VERSION"),
        "figures": r.figures,
    });
    if let Some(p) = args.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?)?;
    println!("report: {}", args.out.display());
    Ok(0)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("ffrtmp-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
