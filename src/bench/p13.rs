//! P13: events. (a) Webhook deliveries to a local receiver (an actix-web server in
//! this process, subscribed twice to every job event) while jobs are submitted at
//! 1,000/s and run by two no-op workers:
//! deliveries per second and the p99 from the state change (the event's own time) to
//! the receiver reading it. (b) P1's submit throughput with one webhook subscribed to
//! every job event, against the same run without. (c) Submit p99 latency at a steady
//! 200 submits/s with 1,000 open SSE clients (quick: 200) reading every event, against none.
//! Goals: (a) ≥ 5,000 deliveries/s and p99 ≤ 100 ms; (b) within 10 %; (c) ≤ +20 %.

use super::{Report, http, load, master, ms_stats, post, worker};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (event time → received) latencies in ms, and the first and last arrival.
#[derive(Default)]
struct Arrivals {
    latency_ms: Vec<f64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn hook(body: actix_web::web::Bytes, got: actix_web::web::Data<Arc<Mutex<Arrivals>>>) -> actix_web::HttpResponse {
    let now = chrono::Utc::now();
    let at = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v["at"].as_str()?).ok());
    let mut g = got.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = at {
        g.latency_ms.push((now - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    let t = Instant::now();
    g.first.get_or_insert(t);
    g.last = Some(t);
    actix_web::HttpResponse::NoContent().finish()
}

/// The receiver: (its URL, what it got, its server handle).
fn receiver() -> anyhow::Result<(String, Arc<Mutex<Arrivals>>, actix_web::dev::ServerHandle)> {
    use actix_web::{App, HttpServer, web};
    let got: Arc<Mutex<Arrivals>> = Arc::default();
    let data = web::Data::new(got.clone());
    let srv = HttpServer::new(move || App::new().app_data(data.clone()).route("/hook", web::post().to(hook)))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
    let port = srv.addrs().first().map(|a| a.port()).unwrap_or(0);
    let running = srv.run();
    let handle = running.handle();
    actix_rt::spawn(running);
    Ok((format!("http://127.0.0.1:{port}/hook"), got, handle))
}

async fn subscribe(c: &awc::Client, base: &str, url: &str) -> anyhow::Result<()> {
    let body = json!({"url": url, "events": ["job.*"], "secret": "p13-bench-secret-0123"});
    let (s, v) = post(c, &format!("{base}/webhooks"), &body).await?;
    anyhow::ensure!(s == 201, "P13: subscription answered {s}: {v}");
    Ok(())
}

/// Submissions at `rate` per second for `secs` (each as its own request).
async fn paced_submits(c: &awc::Client, base: &str, rate: f64, secs: f64) -> usize {
    let start = Instant::now();
    let total = (rate * secs) as usize;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            actix_rt::time::sleep(wait).await;
        }
        let (c, url) = (c.clone(), format!("{base}/jobs"));
        tasks.push(actix_rt::spawn(async move { post(&c, &url, &json!({"scenario": format!("p13-{i}")})).await }));
    }
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok((201, _)))) {
            ok += 1;
        }
    }
    ok
}

const SUBSCRIPTIONS: usize = 2;

async fn deliveries(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let secs = if r.quick { 2.0 } else { 10.0 };
    let m = master(&tmp.join("p13-a.db"), &["--webhook-allow", "127.0.0.1"])?;
    let c = http();
    let (url, got, server) = receiver()?;
    // Two subscriptions to every job event: each event is delivered twice, so the
    // dispatcher is offered twice what the jobs make.
    for _ in 0..SUBSCRIPTIONS {
        subscribe(&c, &m.url, &url).await?;
    }
    let _workers = (0..2)
        .map(|i| worker(&m.url, &tmp.join(format!("p13-w{i}")), &["--executor", "noop", "--max-concurrent-jobs", "64"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let submitted = paced_submits(&c, &m.url, 1000.0, secs).await;
    // Every job's submitted, started and completed events, to each subscription.
    let expected = submitted * 3 * SUBSCRIPTIONS;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = got.lock().map(|g| g.latency_ms.len()).unwrap_or(0);
        if seen >= expected {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (lat, span) = {
        let g = got.lock().unwrap_or_else(|e| e.into_inner());
        let span = match (g.first, g.last) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => f64::NAN,
        };
        (g.latency_ms.clone(), span)
    };
    server.stop(false).await;
    let (p50, p99, max) = ms_stats(lat);
    let rate = seen as f64 / span;
    let details = json!({"jobs_submitted": submitted, "submit_seconds": secs, "deliveries": seen,
        "expected": expected, "delivery_span_seconds": span, "p50_ms": p50, "max_ms": max});
    r.add(
        "P13",
        "webhook deliveries/s, 1,000 jobs/s submitted, 2 subscriptions",
        rate,
        "events/s",
        Some((">=", 5_000.0)),
        details,
    );
    r.add("P13", "state change → webhook received p99", p99, "ms", Some(("<=", 100.0)), json!({"p50_ms": p50}));
    Ok(())
}

/// Submits/s and p99 with 64 clients on a fresh master (`hooked`: one webhook on every job event).
async fn submit_rate(tmp: &Path, name: &str, secs: f64, hooked: bool) -> anyhow::Result<(f64, f64)> {
    let m = master(&tmp.join(format!("{name}.db")), &["--webhook-allow", "127.0.0.1"])?;
    let c = http();
    let server = match hooked {
        true => {
            let (url, _, handle) = receiver()?;
            subscribe(&c, &m.url, &url).await?;
            Some(handle)
        }
        false => None,
    };
    let url = format!("{}/jobs", m.url);
    let (n, lat) = load(64, Duration::from_secs_f64(secs), move |i| {
        let (c, url) = (c.clone(), url.clone());
        async move { matches!(post(&c, &url, &json!({"scenario": format!("p13-{i}")})).await, Ok((201, _))) }
    })
    .await;
    if let Some(s) = server {
        s.stop(false).await;
    }
    Ok((n as f64 / secs, ms_stats(lat).1))
}

/// Submit p99 (200 submits/s) with `streams` SSE clients reading every event.
async fn submit_p99_with_streams(tmp: &Path, name: &str, secs: f64, streams: usize) -> anyhow::Result<f64> {
    let m = master(&tmp.join(format!("{name}.db")), &["--max-event-streams", "5000"])?;
    let sse = awc::Client::builder()
        .timeout(Duration::from_secs(3600))
        .connector(awc::Connector::new().limit(streams + 16))
        .finish();
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let mut readers = Vec::new();
    for _ in 0..streams {
        let (sse, url, open) = (sse.clone(), format!("{}/events", m.url), open.clone());
        readers.push(actix_rt::spawn(async move {
            use futures_util::StreamExt;
            let Ok(mut resp) = sse.get(url).send().await else { return };
            open.set(open.get() + 1);
            while let Some(Ok(_)) = resp.next().await {}
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.get() < streams && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(open.get() == streams, "P13: only {} of {streams} event streams opened", open.get());
    // A steady 200 submits/s (as P3 offers), each timed: every one of them is an event
    // every stream receives.
    let c = http();
    let lat: std::rc::Rc<std::cell::RefCell<Vec<f64>>> = Default::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..(200.0 * secs) as usize {
        let due = start + Duration::from_secs_f64(i as f64 / 200.0);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            actix_rt::time::sleep(wait).await;
        }
        let (c, url, lat) = (c.clone(), format!("{}/jobs", m.url), lat.clone());
        tasks.push(actix_rt::spawn(async move {
            let t = Instant::now();
            if let Ok((201, _)) = post(&c, &url, &json!({"scenario": format!("p13s-{i}")})).await {
                lat.borrow_mut().push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    for r in readers {
        r.abort();
    }
    let lat = lat.borrow().clone();
    Ok(ms_stats(lat).1)
}

pub(super) async fn p13(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    crate::os::raise_open_file_limit();
    deliveries(r, tmp).await?;
    let secs = if r.quick { 1.5 } else { 10.0 };
    let (plain, plain_p99) = submit_rate(tmp, "p13-b0", secs, false).await?;
    let (hooked, hooked_p99) = submit_rate(tmp, "p13-b1", secs, true).await?;
    r.add(
        "P13",
        "P1 submits/s with a webhook on every job event / without",
        hooked / plain,
        "ratio",
        Some((">=", 0.9)),
        json!({"without": plain, "with": hooked, "p99_ms_without": plain_p99, "p99_ms_with": hooked_p99}),
    );
    let streams = if r.quick { 200 } else { 1_000 };
    let none = submit_p99_with_streams(tmp, "p13-c0", secs, 0).await?;
    let many = submit_p99_with_streams(tmp, "p13-c1", secs, streams).await?;
    r.add(
        "P13",
        format!("submit p99 with {streams} SSE clients / with none"),
        many / none,
        "ratio",
        Some(("<=", 1.2)),
        json!({"p99_ms_none": none, "p99_ms_streams": many, "streams": streams}),
    );
    Ok(())
}
