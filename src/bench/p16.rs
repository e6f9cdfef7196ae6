//! P16: failover of highly available masters (needs `--postgres`). Two masters on one
//! PostgreSQL database and a no-op worker given both; each round kills the leader with
//! SIGKILL and measures how long until the other master leads (its `/health` says so)
//! and until a job submitted after the kill has completed on the new leader (the farm
//! works again end to end), then starts the killed master again as a follower.
//! Goal: a follower leads within 10 s.

use super::{Master, Report, Store, get, http, ms_stats, post, spawn, worker};
use crate::db;
use crate::testkit::free_port;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

fn start(url: &str, port: u16) -> anyhow::Result<Master> {
    let artifacts = std::env::temp_dir().join("ffrtmp-bench-artifacts").to_string_lossy().to_string();
    let port_s = port.to_string();
    let args = [
        "master",
        "--port",
        &port_s,
        "--metrics-port",
        "0",
        "--database-url",
        url,
        "--retention-days",
        "0",
        "--artifact-dir",
        &artifacts,
    ];
    let proc = spawn(&args, "ffrtmp master listening on ")?;
    Ok(Master { proc, url: format!("http://127.0.0.1:{port}") })
}

async fn leads(c: &awc::Client, base: &str) -> bool {
    matches!(get(c, &format!("{base}/health")).await, Ok((200, h)) if h["role"] == "leader")
}

pub async fn p16(r: &mut Report, tmp: &Path, admin: &str) -> anyhow::Result<()> {
    let rounds = if r.quick { 2 } else { 20 };
    let url = match Store::Postgres(admin.into()).database(tmp, "p16")? {
        db::DatabaseUrl::Postgres(u) => u,
        db::DatabaseUrl::Sqlite(_) => unreachable!("a PostgreSQL store"),
    };
    let ports = [free_port(), free_port()];
    let mut masters = [Some(start(&url, ports[0])?), Some(start(&url, ports[1])?)];
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let _w = worker(&bases.join(","), &tmp.join("p16-w"), &["--executor", "noop", "--max-concurrent-jobs", "8"])?;
    let c = http();
    let (mut elected, mut recovered) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut leader = None;
        for (i, b) in bases.iter().enumerate() {
            if leads(&c, b).await {
                leader = Some(i);
            }
        }
        let leader = leader.ok_or_else(|| anyhow::anyhow!("P16: no master leads"))?;
        let other = &bases[1 - leader];
        let killed = Instant::now();
        drop(masters[leader].take()); // SIGKILL
        while !leads(&c, other).await {
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "P16: no take-over within 60 s");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        elected.push(killed.elapsed().as_secs_f64() * 1000.0);
        let (s, job) = post(&c, &format!("{other}/jobs"), &json!({"scenario": "p16"})).await?;
        anyhow::ensure!(s == 201, "P16: submit on the new leader: {s} {job}");
        let id = job["id"].as_str().unwrap_or_default().to_string();
        loop {
            let (_, j) = get(&c, &format!("{other}/jobs/{id}")).await?;
            if j["status"] == "completed" {
                break;
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "P16: no job completed within 60 s: {j}");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        recovered.push(killed.elapsed().as_secs_f64() * 1000.0);
        masters[leader] = Some(start(&url, ports[leader])?);
    }
    let (p50, p99, max) = ms_stats(elected);
    r.add(
        "P16",
        "[postgres] failover: kill -9 of the leader → a follower leads, max",
        max,
        "ms",
        Some(("<=", 10_000.0)),
        json!({"rounds": rounds, "p50_ms": p50, "p99_ms": p99}),
    );
    let (p50, p99, max) = ms_stats(recovered);
    r.add(
        "P16",
        "[postgres] failover: kill -9 of the leader → a new job completed, max",
        max,
        "ms",
        None,
        json!({"rounds": rounds, "p50_ms": p50, "p99_ms": p99}),
    );
    Ok(())
}
