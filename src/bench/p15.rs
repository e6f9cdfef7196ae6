//! P15: the web console with 10,000 jobs stored (quick: 1,000). Signed in with a
//! session cookie as a browser is, each page is loaded as a browser loads it (the
//! HTML, then its stylesheet and script) many times in a row; the figure is each
//! page's p99 load time on loopback. Goal: every page under 300 ms.

use super::{Report, master, prefill};
use crate::db;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "p15-bench-admin-key";

async fn load(c: &awc::Client, url: &str, cookie: &str) -> anyhow::Result<(u16, usize)> {
    let mut r = c.get(url).insert_header(("Cookie", cookie)).send().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = r.body().limit(16 << 20).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((r.status().as_u16(), b.len()))
}

pub async fn p15(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let stored = if r.quick { 1_000 } else { 10_000 };
    let rounds = if r.quick { 10 } else { 100 };
    let path = tmp.join("p15.db");
    let database = db::DatabaseUrl::Sqlite(path.clone());
    prefill(&database, stored, stored / 10)?;
    let m = master(&path, &["--api-key", KEY])?;
    let c = awc::Client::builder().disable_redirects().timeout(Duration::from_secs(60)).finish();
    let res = c
        .post(format!("{}/ui/login", m.url))
        .send_form(&[("key", KEY), ("next", "/ui")])
        .await
        .map_err(|e| anyhow::anyhow!("P15 sign-in: {e}"))?;
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .find(|c| c.starts_with(crate::http::ui::session::COOKIE))
        .ok_or_else(|| anyhow::anyhow!("P15: sign-in set no session cookie ({})", res.status()))?;
    let mut listing = c
        .get(format!("{}/jobs?limit=1&status=completed", m.url))
        .insert_header(("Cookie", cookie.as_str()))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v: serde_json::Value = listing.json().limit(1 << 20).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let job = v["jobs"][0]["id"].as_str().unwrap_or_default().to_string();
    let pages = [
        ("overview", "/ui".to_string()),
        ("jobs", "/ui/jobs".into()),
        ("jobs filtered", "/ui/jobs?status=completed&queue=batch&scenario=prefill-99".into()),
        ("job detail", format!("/ui/jobs/{job}")),
        ("submit", "/ui/submit".into()),
        ("nodes", "/ui/nodes".into()),
        ("webhooks", "/ui/webhooks".into()),
    ];
    for (name, path) in pages {
        let mut ms = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let (s, n) = load(&c, &format!("{}{path}", m.url), &cookie).await?;
            anyhow::ensure!(s == 200, "P15: {path} answered {s}");
            for asset in ["/ui/assets/app.css", "/ui/assets/app.js"] {
                load(&c, &format!("{}{asset}", m.url), &cookie).await?;
            }
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            bytes = n;
        }
        let (p50, p99, max) = super::ms_stats(ms);
        r.add(
            "P15",
            format!("console {name}: p99 page load, {stored} jobs stored"),
            p99,
            "ms",
            Some(("<=", 300.0)),
            json!({"p50_ms": p50, "max_ms": max, "html_bytes": bytes, "rounds": rounds}),
        );
    }
    drop(m);
    Ok(())
}
