//! P14: parked polls — many idle nodes long-polling while jobs are submitted.

use super::*;

/// One simulated idle worker of P14: parks `/jobs/next` (long-poll) and heartbeats
/// every `hb`; a job it receives is reported completed at once and its arrival time
/// recorded by scenario.
fn spawn_idle_node(
    c: &awc::Client,
    base: &str,
    node: String,
    hb: Duration,
    stop: Rc<RefCell<bool>>,
    got: Rc<RefCell<std::collections::HashMap<String, Instant>>>,
) {
    let (c1, base1, node1, stop1) = (c.clone(), base.to_string(), node.clone(), stop.clone());
    actix_rt::spawn(async move {
        let url = format!("{base1}/jobs/next?node_id={node1}&wait=30");
        while !*stop1.borrow() {
            match get(&c1, &url).await {
                Ok((200, v)) => {
                    for j in v["jobs"].as_array().into_iter().flatten() {
                        got.borrow_mut().insert(j["scenario"].as_str().unwrap_or_default().to_string(), Instant::now());
                        let body = json!({"job_id": j["id"], "node_id": node1, "attempt": j["attempt"], "status": "completed"});
                        let _ = post(&c1, &format!("{base1}/results"), &body).await;
                    }
                }
                _ => actix_rt::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let (c2, base2) = (c.clone(), base.to_string());
    actix_rt::spawn(async move {
        // Spread the heartbeats over the interval, as independent machines would.
        actix_rt::time::sleep(hb.mul_f64(fastrand::f64())).await;
        while !*stop.borrow() {
            let body = json!({"cpu_load_percent": fastrand::f64() * 100.0, "ram_free_bytes": (8u64 << 30) + fastrand::u64(0..1 << 30)});
            let _ = post(&c2, &format!("{base2}/nodes/{node}/heartbeat"), &body).await;
            actix_rt::time::sleep(hb).await;
        }
    });
}

/// P14: many idle workers parked on `/jobs/next`, heartbeating, with one job queued that
/// none of them can run. The master's CPU and its answers must not depend on the
/// square of parked polls: CPU, `/api/v1/status` p99 and submit → claim p99 at
/// 250 / 1,000 / 2,000 parked polls (quick: 50 / 200).
pub(super) async fn p14(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    crate::os::raise_open_file_limit();
    let steps: &[usize] = if r.quick { &[50, 200] } else { &[250, 1_000, 2_000] };
    let window = Duration::from_secs(if r.quick { 3 } else { 15 });
    let hb = Duration::from_secs(5);
    let m = master(&tmp.join("p14.db"), &["--heartbeat-interval", "5"])?;
    let pid = m.proc.child.id();
    let c = awc::Client::builder()
        .timeout(Duration::from_secs(120))
        .connector(awc::Connector::new().limit(steps.last().copied().unwrap_or(0) * 2 + 64))
        .finish();
    let stop = Rc::new(RefCell::new(false));
    let got: Rc<RefCell<std::collections::HashMap<String, Instant>>> = Rc::default();
    // The job nobody can run: it stays queued with a reason, by design.
    let (s, _) = post(
        &c,
        &format!("{}/jobs", m.url),
        &json!({"scenario": "unplaceable", "parameters": {"codec": "h264_nvenc"}}),
    )
    .await?;
    anyhow::ensure!(s == 201, "unplaceable job not accepted: {s}");
    let mut registered = 0;
    let mut rows = Vec::new();
    for &n in steps {
        while registered < n {
            let node = format!("p14-{registered}");
            let (s, _) = post(
                &c,
                &format!("{}/nodes/register", m.url),
                &json!({"node_id": node, "address": node, "encoders": ["libx264"], "max_concurrent_jobs": 1}),
            )
            .await?;
            anyhow::ensure!(s == 201 || s == 200, "registration failed: {s}");
            spawn_idle_node(&c, &m.url, node, hb, stop.clone(), got.clone());
            registered += 1;
        }
        let t = Instant::now();
        while metric(&c, &m.url, "ffrtmp_workers_waiting").await < n as f64 {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "only {} of {n} polls parked",
                metric(&c, &m.url, "ffrtmp_workers_waiting").await
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        // Measure a window: status p99 and claim latency of placeable jobs, while every
        // node heartbeats and stays parked.
        let cpu0 = cpu_seconds(pid);
        let start = Instant::now();
        let (mut status_ms, mut claim_ms) = (Vec::new(), Vec::new());
        // (scenario, job id) of the placeable jobs submitted in this window.
        let mut sent: Vec<(String, String)> = Vec::new();
        let mut i = 0;
        while start.elapsed() < window {
            let t = Instant::now();
            if let Ok((200, _)) = get(&c, &format!("{}/api/v1/status", m.url)).await {
                status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if i % 2 == 0 {
                let key = format!("p14-{n}-{i}");
                let (_, v) = post(&c, &format!("{}/jobs", m.url), &json!({"scenario": key})).await?;
                sent.push((key, v["id"].as_str().unwrap_or_default().to_string()));
            }
            i += 1;
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        let cores = (cpu_seconds(pid) - cpu0) / start.elapsed().as_secs_f64();
        let t = Instant::now();
        while got.borrow().len() < sent.len() && t.elapsed() < Duration::from_secs(30) {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // Submit → claim by the master's own stamps (created_at → the transition to
        // processing, written by the claim), so the bench process's own scheduling of
        // 2,000 simulated workers does not count.
        for (key, id) in &sent {
            if !got.borrow().contains_key(key) {
                continue;
            }
            let (_, j) = get(&c, &format!("{}/jobs/{id}", m.url)).await?;
            let stamp = |s: &Value| s.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            let created = stamp(&j["created_at"]);
            let claimed = j["state_transitions"]
                .as_array()
                .and_then(|t| t.iter().find(|e| e["to"] == "processing"))
                .and_then(|e| stamp(&e["timestamp"]));
            if let (Some(a), Some(b)) = (created, claimed) {
                claim_ms.push((b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
        let placed = claim_ms.len();
        let (_, status_p99, _) = ms_stats(status_ms);
        let (_, claim_p99, _) = ms_stats(claim_ms);
        let last = Some(n) == steps.last().copied();
        let judged = |t: (&'static str, f64)| last.then_some(t);
        r.add(
            "P14",
            format!("master CPU with {n} parked polls + heartbeats"),
            cores,
            "cores",
            judged(("<=", 0.5)),
            json!({"parked": n}),
        );
        r.add(
            "P14",
            format!("/api/v1/status p99 with {n} parked polls"),
            status_p99,
            "ms",
            judged(("<=", 50.0)),
            json!({"parked": n}),
        );
        r.add(
            "P14",
            format!("submit → claim p99 with {n} parked polls"),
            claim_p99,
            "ms",
            judged(("<=", 10.0)),
            json!({"parked": n, "placed": placed, "submitted": sent.len()}),
        );
        anyhow::ensure!(placed == sent.len(), "only {placed} of {} placeable jobs were claimed", sent.len());
        rows.push((n, cores));
    }
    // Linear cost: CPU per parked poll should not grow with their number.
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && first.0 != last.0
    {
        let per = |(n, cores): (usize, f64)| cores / n as f64;
        r.add(
            "P14",
            format!("CPU per parked poll, {} vs {}", last.0, first.0),
            per(*last) / per(*first).max(1e-9),
            "ratio",
            None,
            json!({}),
        );
    }
    *stop.borrow_mut() = true;
    Ok(())
}
