//! P17: a large farm's progress traffic. 1,000 simulated workers (quick: 100), each
//! holding 4 running jobs, report their progress every second in one batched request
//! (`POST /nodes/{id}/progress`), spread over the second as independent machines
//! would; meanwhile an operator reads one job (`GET /jobs/{id}`) 20 times a second.
//! Figures: the master's CPU (cores) and the operator's p99. Also P9's batched form:
//! job updates absorbed per second when each request carries one node's 4 jobs.

use super::{Report, get, master, ms_stats, post, submit_many};
use crate::testkit::cpu_seconds;
use serde_json::json;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

const JOBS_PER_NODE: usize = 4;

/// Register `nodes` nodes and give each `JOBS_PER_NODE` running jobs: (node, [(job, attempt)]).
async fn farm(
    c: &awc::Client,
    base: &str,
    prefix: &str,
    nodes: usize,
) -> anyhow::Result<Vec<(String, Vec<(String, i64)>)>> {
    submit_many(c, base, nodes * JOBS_PER_NODE, 32).await?;
    let mut out = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let node = format!("{prefix}{i}");
        post(
            c,
            &format!("{base}/nodes/register"),
            &json!({"node_id": node, "encoders": ["libx264"], "max_concurrent_jobs": JOBS_PER_NODE}),
        )
        .await?;
        let mut jobs = Vec::new();
        while jobs.len() < JOBS_PER_NODE {
            let (_, v) = get(c, &format!("{base}/jobs/next?node_id={node}&wait=1&max={JOBS_PER_NODE}")).await?;
            for j in v["jobs"].as_array().into_iter().flatten() {
                jobs.push((j["id"].as_str().unwrap_or_default().to_string(), j["attempt"].as_i64().unwrap_or(1)));
            }
        }
        out.push((node, jobs));
    }
    Ok(out)
}

fn batch(jobs: &[(String, i64)], percent: f64) -> serde_json::Value {
    let reports: Vec<_> = jobs
        .iter()
        .map(|(id, attempt)| json!({"job_id": id, "attempt": attempt, "percent": percent, "fps": 30.0}))
        .collect();
    json!({ "reports": reports })
}

pub async fn p17(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    crate::os::raise_open_file_limit();
    let nodes = if r.quick { 100 } else { 1_000 };
    let window = Duration::from_secs(if r.quick { 3 } else { 10 });
    let m = master(&tmp.join("p17.db"), &["--heartbeat-interval", "30"])?;
    let c = awc::Client::builder()
        .timeout(Duration::from_secs(120))
        .connector(awc::Connector::new().limit(nodes + 64))
        .finish();
    let farm = farm(&c, &m.url, "p17-", nodes).await?;
    let probe_job = farm[0].1[0].0.clone();

    // P9, batched: as many requests as 32 clients can make, each one node's 4 jobs.
    let farm = Rc::new(farm);
    let secs = if r.quick { 2.0 } else { 10.0 };
    let (cc, base, f) = (c.clone(), m.url.clone(), farm.clone());
    let (n, _) = super::load(32, Duration::from_secs_f64(secs), move |i| {
        let (c, base, f) = (cc.clone(), base.clone(), f.clone());
        async move {
            let (node, jobs) = &f[i % f.len()];
            matches!(
                post(&c, &format!("{base}/nodes/{node}/progress"), &batch(jobs, (i % 100) as f64)).await,
                Ok((200, _))
            )
        }
    })
    .await;
    r.add(
        "P9",
        format!("progress updates absorbed per second, batched ({JOBS_PER_NODE} jobs per request)"),
        (n * JOBS_PER_NODE) as f64 / secs,
        "updates/s",
        Some((">=", 25_000.0)),
        json!({"requests": n, "updates": n * JOBS_PER_NODE}),
    );

    // The farm: every node once a second, spread over the second.
    let stop = Rc::new(RefCell::new(false));
    for (k, (node, jobs)) in farm.iter().enumerate() {
        let (c, base, node, jobs, stop) = (c.clone(), m.url.clone(), node.clone(), jobs.clone(), stop.clone());
        let offset = Duration::from_secs_f64(k as f64 / farm.len() as f64);
        actix_rt::spawn(async move {
            actix_rt::time::sleep(offset).await;
            let mut percent = 0.0;
            while !*stop.borrow() {
                let next = Instant::now() + Duration::from_secs(1);
                percent = (percent + 1.0) % 100.0;
                let _ = post(&c, &format!("{base}/nodes/{node}/progress"), &batch(&jobs, percent)).await;
                actix_rt::time::sleep_until(next.into()).await;
            }
        });
    }
    // Let every node send once before measuring.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let pid = m.proc.child.id();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut reads = Vec::new();
    while started.elapsed() < window {
        let t = Instant::now();
        let (s, _) = get(&c, &format!("{}/jobs/{probe_job}", m.url)).await?;
        anyhow::ensure!(s == 200, "P17: GET /jobs/{{id}} answered {s}");
        reads.push(t.elapsed().as_secs_f64() * 1000.0);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let cores = (cpu_seconds(pid) - cpu0) / started.elapsed().as_secs_f64();
    *stop.borrow_mut() = true;
    let (p50, p99, _) = ms_stats(reads);
    r.add(
        "P17",
        format!("{nodes} workers × {JOBS_PER_NODE} jobs reporting progress every second: master CPU"),
        cores,
        "cores",
        Some(("<=", 0.5)),
        json!({"updates_per_second": nodes * JOBS_PER_NODE, "requests_per_second": nodes}),
    );
    r.add(
        "P17",
        format!("{nodes} workers × {JOBS_PER_NODE} jobs reporting progress every second: GET /jobs/{{id}} p99"),
        p99,
        "ms",
        Some(("<=", 50.0)),
        json!({"p50_ms": p50}),
    );
    Ok(())
}
