//! The web console in a real browser (headless Chromium over WebDriver): an operator
//! signs in, uploads a file and submits it with a template, watches progress live, downloads an output,
//! pauses/resumes/cancels a running ffmpeg, drains a node, bulk-cancels, plays an HLS
//! package; a read-only key sees no controls and is refused if it posts anyway; a
//! session's POST without its CSRF token is refused. Screenshots of the main pages at
//! desktop and phone sizes are written to `target/console-screenshots/`.

use super::browser::{Browser, DESKTOP, PHONE};
use super::harness::*;
use serde_json::json;
use std::time::Duration;

const KEYS: &[&str] = &["--api-key", "adm", "--worker-api-key", "wrk", "--read-api-key", "ro"];

fn sign_in(b: &Browser, m: &TestMaster, key: &str, page: &str) {
    b.goto(&format!("{}{page}", m.url));
    assert!(b.path().starts_with("/ui/login"), "an anonymous visit goes to sign-in, not {}", b.path());
    b.assert_no_console_errors("the sign-in page");
    b.fill("#key", key);
    b.click("form.login button[type=submit]");
    b.wait_for(
        10,
        &format!("signed in and back on {page}"),
        "return location.pathname === arguments[0]",
        vec![json!(page)],
    );
}

/// The in-page SHA-256 of what the browser downloads from `href` (with its session).
fn sha256_in_page(b: &Browser, href: &str) -> String {
    let v = b.exec_async(
        "const [href, done] = arguments;
         fetch(href).then(r => r.arrayBuffer()).then(buf => crypto.subtle.digest('SHA-256', buf))
           .then(h => done(Array.from(new Uint8Array(h)).map(x => x.toString(16).padStart(2, '0')).join('')))
           .catch(e => done('error: ' + e));",
        vec![json!(href)],
    );
    v.as_str().unwrap_or_default().to_string()
}

/// A POST from the page; (status, error code). `with_csrf`: send the page's token.
fn post_in_page(b: &Browser, path: &str, with_csrf: bool) -> (u64, String) {
    let v = b.exec_async(
        "const [path, withCsrf, done] = arguments;
         const headers = withCsrf ? {'X-CSRF-Token': document.querySelector('meta[name=\"csrf-token\"]').content} : {};
         fetch(path, {method: 'POST', headers}).then(async r => done([r.status, (await r.json()).error]))
           .catch(e => done([0, String(e)]));",
        vec![json!(path), json!(with_csrf)],
    );
    (v[0].as_u64().unwrap_or(0), v[1].as_str().unwrap_or_default().to_string())
}

/// Controls a screen reader could not name: no `<label>`, no `aria-label`, no text.
const UNLABELLED_CONTROLS: &str =
    "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map(e => e.outerHTML.slice(0, 120))";

fn screenshots_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

#[test]
fn an_operator_runs_the_farm_from_the_console() {
    let m = TestMaster::start(KEYS);
    let admin = m.api().with_key("adm");
    let w = TestWorker::start(&m, &["--api-key", "wrk"]);
    let (s, _) = admin.post(
        "/templates",
        json!({"name": "tiny", "description": "A 160x90 realtime test encode",
            "parameters": {"resolution": "160x90", "fps": 10, "duration": 6, "realtime": true, "preset": "ultrafast"}}),
    );
    assert_eq!(s, 201);
    // A file on the operator's machine, uploaded through the form (its odd name made safe).
    let files = tmpdir();
    let upload = files.path().join("clip 1.mp4");
    super::graphs::make_source(&upload, 160, 90, 6, &["-c:v", "libx264", "-preset", "ultrafast"]);
    let b = Browser::start();
    sign_in(&b, &m, "adm", "/ui/jobs");
    b.assert_no_console_errors("jobs");

    // The overview follows the event stream: a job run meanwhile shows up without a reload.
    b.goto(&format!("{}/ui", m.url));
    b.exec("window.__sameDocument = true; return true", vec![]);
    let warm_up = admin.submit(json!({"scenario": "warm-up", "parameters": {"resolution": "160x90", "duration": 1}}));
    b.wait_for(
        30,
        "the overview counting the finished job",
        "return document.getElementById('done-hour').textContent === '1'",
        vec![],
    );
    assert_eq!(admin.status(&warm_up), "completed");
    assert_eq!(b.exec("return window.__sameDocument === true", vec![]), json!(true), "no reload happened");
    b.assert_no_console_errors("overview (live)");

    // Submit from a template: a refused override shows the API's own message.
    b.goto(&format!("{}/ui/submit", m.url));
    b.choose("#template", "tiny");
    assert!(b.text("#template-parameters").contains("160x90"), "the form shows the template's parameters");
    b.fill("#overrides", r#"{"fps": -5}"#);
    b.click("#submit-form button[type=submit]");
    b.wait_for(10, "the refusal shown", "return !document.getElementById('submit-error').hidden", vec![]);
    let (s, api_error) = admin.post("/jobs", json!({"template": "tiny", "parameters": {"fps": -5}}));
    assert_eq!(s, 400);
    assert_eq!(b.text("#submit-error"), api_error["message"].as_str().unwrap(), "the same message as the API");
    let refused = b.console_errors();
    assert!(refused.len() == 1 && refused[0].contains("400"), "only the refused submission logged: {refused:?}");
    b.fill("#overrides", r#"{"duration": 6}"#);
    b.fill("#scenario", "console-submit");
    b.fill("#upload", upload.to_str().unwrap());
    b.click("#submit-form button[type=submit]");
    b.wait_for(10, "the new job's page", "return /^\\/ui\\/jobs\\/[0-9a-f-]{36}$/.test(location.pathname)", vec![]);
    let id = b.path().rsplit('/').next().unwrap().to_string();
    let job = admin.job(&id);
    assert_eq!(job["scenario"], "console-submit");
    assert_eq!(job["parameters"]["resolution"], "160x90", "resolved from the template: {job}");
    let input = job["parameters"]["input"].as_str().unwrap_or_default().to_string();
    assert!(
        input.starts_with("upload://") && input.ends_with("/clip_1.mp4"),
        "the uploaded file is the input: {input}"
    );
    let (s, stored, _) = admin.bytes(&input.replace("upload://", "/uploads/"), &[]);
    assert_eq!((s, sha256_hex(&stored)), (200, sha256_hex(&std::fs::read(&upload).unwrap())), "stored as sent");
    b.assert_no_console_errors("submit");

    // Its progress bar advances on the jobs page without a reload and reaches 100 %.
    b.goto(&format!("{}/ui/jobs", m.url));
    b.exec("window.__sameDocument = true; return true", vec![]);
    let bar = format!(".prog[data-job-id=\"{id}\"] progress");
    b.wait_for(
        30,
        "a progress value between 0 and 100",
        "const p = document.querySelector(arguments[0]); return p !== null && p.value > 0 && p.value < 100",
        vec![json!(bar)],
    );
    let rate = b.text(&format!(".prog[data-job-id=\"{id}\"] .rate"));
    assert!(rate.contains("fps"), "live figures beside the bar: {rate:?}");
    let layout = "const t = document.querySelector('table.jobs'); \
        return [t.offsetWidth, t.offsetHeight].concat([...t.querySelectorAll('th')].map(th => th.offsetWidth))";
    let before = b.exec(layout, vec![]);
    b.wait_for(30, "the bar at 100 % and the job completed", &format!(
        "return document.querySelector(arguments[0]).value === 100 && document.querySelector('tr[data-job-id=\"{id}\"] .badge').textContent === 'completed'"),
        vec![json!(bar)]);
    assert_eq!(b.exec("return window.__sameDocument === true", vec![]), json!(true), "no reload happened");
    assert_eq!(b.exec(layout, vec![]), before, "progress and state updates moved nothing on the page");
    // Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    b.exec("document.activeElement.blur(); return true", vec![]);
    b.keys("\u{E004}");
    assert_eq!(b.exec("return document.activeElement.className", vec![]), json!("skip"));
    b.keys("\u{E007}");
    b.wait_for(5, "focus in the content", "return document.activeElement.id === 'main'", vec![]);
    b.assert_no_console_errors("jobs (live)");

    // Its detail page; the download's SHA-256, computed in the browser, is the stored one.
    b.click(&format!("a[href=\"/ui/jobs/{id}\"]"));
    b.wait_for(
        10,
        "the job's page",
        "return location.pathname === arguments[0]",
        vec![json!(format!("/ui/jobs/{id}"))],
    );
    assert!(b.text(".badge").contains("completed"));
    let steps = b.count("ol.timeline li");
    assert!(steps >= 3, "a state timeline: {steps} steps");
    let outputs = admin.outputs(&id);
    let out = &outputs[0];
    let href = format!("/jobs/{id}/outputs/{}", out["name"].as_str().unwrap());
    assert!(b.exists(&format!("table.outputs a[href=\"{href}\"]")), "a download link for {href}");
    let fetched = fetch_output(&admin, &id);
    assert_eq!(sha256_in_page(&b, &href), out["sha256"].as_str().unwrap());
    assert_eq!(sha256_hex(&std::fs::read(&fetched.path).unwrap()), out["sha256"].as_str().unwrap());
    b.assert_no_console_errors("job detail");

    // Pause and resume a running job from its page: ffmpeg stops and continues; then cancel.
    let long = admin.submit(json!({"scenario": "long", "parameters": {"resolution": "160x90", "fps": 10, "duration": 60, "realtime": true}}));
    let info = &admin.job(&id)["input_info"];
    assert!(info["duration_seconds"].as_f64().unwrap_or(0.0) > 5.0, "the worker read the upload: {info}");
    wait_until(Duration::from_secs(30), "the long encode running", || !ffmpeg_pids(&long).is_empty());
    b.goto(&format!("{}/ui/jobs/{long}", m.url));
    b.wait_for(
        20,
        "pause enabled",
        "const e = document.querySelector('[data-action=pause]'); return e !== null && !e.disabled",
        vec![],
    );
    b.wait_for(20, "the live log tail", "return document.getElementById('log').textContent.trim().length > 0", vec![]);
    b.click("[data-action=pause]");
    let pid = ffmpeg_pids(&long)[0];
    wait_until(Duration::from_secs(15), "ffmpeg stopped (state T)", || pid_state(pid) == Some('T'));
    b.wait_for(15, "the page says paused", "return document.querySelector('.status .badge').textContent === 'paused' && !document.querySelector('[data-action=resume]').disabled", vec![]);
    b.click("[data-action=resume]");
    wait_until(Duration::from_secs(15), "ffmpeg running again", || pid_state(pid) != Some('T'));
    b.wait_for(
        15,
        "the page says processing",
        "return document.querySelector('.status .badge').textContent === 'processing'",
        vec![],
    );
    b.wait_for(15, "cancel enabled", "return !document.querySelector('[data-action=cancel]').disabled", vec![]);
    b.click("[data-action=cancel]");
    wait_until(Duration::from_secs(15), "no ffmpeg left for the job", || ffmpeg_pids(&long).is_empty());
    b.wait_for(
        15,
        "the page says canceled",
        "return document.querySelector('.status .badge').textContent === 'canceled'",
        vec![],
    );
    assert_eq!(admin.status(&long), "canceled");
    b.assert_no_console_errors("job detail (controls)");

    // Drain the node from the nodes page; queued jobs stay queued; bulk-cancel them.
    b.goto(&format!("{}/ui/nodes", m.url));
    b.click(&format!("[data-post=\"/nodes/{}/drain\"]", w.node_id));
    wait_until(Duration::from_secs(10), "the node draining", || admin.node(&w.node_id)["status"] == "draining");
    b.wait_for(
        10,
        "the page shows it",
        "return document.querySelector('.node .badge').textContent === 'draining'",
        vec![],
    );
    let queued: Vec<String> =
        (0..2).map(|_| admin.submit(json!({"scenario": "bulk", "parameters": {"duration": 1}}))).collect();
    b.goto(&format!("{}/ui/jobs?scenario=bulk", m.url));
    assert_eq!(b.count("tbody tr"), 2, "the scenario search finds both");
    b.click("#select-all");
    b.click("[data-bulk=cancel]");
    b.wait_for(
        10,
        "the bulk result",
        "return document.getElementById('bulk-result').textContent.startsWith('2 of 2')",
        vec![],
    );
    for q in &queued {
        assert_eq!(admin.status(q), "canceled");
    }
    b.goto(&format!("{}/ui/nodes", m.url));
    b.click(&format!("[data-post=\"/nodes/{}/undrain\"]", w.node_id));
    wait_until(Duration::from_secs(10), "the node back", || admin.node(&w.node_id)["status"] != "draining");
    b.assert_no_console_errors("nodes");

    // Screenshots of the main pages at both sizes (test artifacts; the README shows two).
    let dir = screenshots_dir();
    for (size, name) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        b.viewport(size);
        for (page, path) in [
            ("overview", "/ui".to_string()),
            ("jobs", "/ui/jobs".into()),
            ("job", format!("/ui/jobs/{id}")),
            ("nodes", "/ui/nodes".into()),
        ] {
            b.goto(&format!("{}{path}", m.url));
            b.wait_for(10, "the page", "return document.readyState === 'complete'", vec![]);
            if page == "overview" {
                assert_eq!(b.text("#done-hour"), "2", "two jobs completed in the last hour");
            }
            let overflow = b.exec("return document.documentElement.scrollWidth - window.innerWidth", vec![]);
            assert!(overflow.as_i64().unwrap_or(0) <= 0, "{page} scrolls sideways at {name} size ({overflow} px)");
            let unlabelled = b.exec(UNLABELLED_CONTROLS, vec![]);
            assert_eq!(unlabelled, json!([]), "controls without a label on {page}");
            b.screenshot(&dir.join(format!("{page}-{name}.png")));
            b.assert_no_console_errors(&format!("{page} at {name} size"));
        }
    }
}

#[test]
fn the_console_plays_packages_and_keeps_read_only_keys_read_only() {
    let inputs = tmpdir();
    super::graphs::make_source(
        &inputs.path().join("src.mp4"),
        256,
        144,
        4,
        &["-c:v", "libx264", "-preset", "ultrafast"],
    );
    // Keep-alives every 0.5 s: a stream whose page went away is noticed at once.
    let flags: Vec<&str> =
        KEYS.iter().copied().chain(["--webhook-allow", "127.0.0.1:9", "--sse-keepalive", "0.5"]).collect();
    let m = TestMaster::start(&flags);
    let admin = m.api().with_key("adm");
    // A receiver that is never there: its deliveries wait for their retries.
    let (s, hook) = admin.post(
        "/webhooks",
        json!({"url": "http://127.0.0.1:9/hook", "events": ["job.completed"], "secret": "console-test-secret-0123"}),
    );
    assert_eq!(s, 201, "{hook}");
    let _w = TestWorker::start(&m, &["--api-key", "wrk", "--input-root", inputs.path().to_str().unwrap()]);
    let id = admin.submit(json!({"scenario": "package", "parameters": {"input": "src.mp4", "preset": "ultrafast",
        "package": {"format": "hls", "segment_seconds": 1, "audio": [], "ladder": [{"height": 144, "bitrate": "200k"}]}}}));
    assert_eq!(wait_terminal(&admin, &id, Duration::from_secs(90))["status"], "completed");
    let b = Browser::start();
    sign_in(&b, &m, "adm", &format!("/ui/jobs/{id}"));

    // The HLS package plays in the page (Chromium's native HLS) for at least 2 s.
    assert!(b.exists("video#player source[type=\"application/vnd.apple.mpegurl\"]"));
    b.exec("document.getElementById('player').play(); return true", vec![]);
    b.wait_for(30, "2 s of playback", "return document.getElementById('player').currentTime >= 2", vec![]);
    let src = b.exec("return document.getElementById('player').currentSrc", vec![]);
    assert!(src.as_str().unwrap_or_default().ends_with("/hls/master.m3u8"), "played the HLS package: {src}");
    b.assert_no_console_errors("job detail (player)");

    // The webhooks page lists the subscription and its delivery, which can be sent again.
    b.goto(&format!("{}/ui/webhooks", m.url));
    b.wait_for(
        20,
        "the delivery listed",
        "return document.querySelector('[data-post$=\"/redeliver\"]') !== null",
        vec![],
    );
    assert!(b.text("h2 code").contains("127.0.0.1:9"));
    b.click("[data-post$=\"/redeliver\"]");
    b.wait_for(
        10,
        "redelivery accepted",
        "return document.getElementById('toast').textContent === 'Redeliver: done'",
        vec![],
    );
    b.assert_no_console_errors("webhooks");
    b.goto(&format!("{}/ui/jobs/{id}", m.url));

    // A session's POST without its CSRF token is refused, and changes nothing.
    assert_eq!(post_in_page(&b, &format!("/jobs/{id}/retry"), false), (403, "csrf_token_invalid".to_string()));
    let errors = b.console_errors();
    assert!(errors.iter().all(|e| e.contains("403")), "only the refused POST logged: {errors:?}");

    // Signing out revokes the session on the server, not just in this browser.
    let cookie = b.cookie("ffrtmp_session").expect("a session cookie");
    b.click("form.signout button");
    b.wait_for(10, "back at sign-in", "return location.pathname === '/ui/login'", vec![]);
    let (s, _) = m.api().raw("GET", "/jobs", &[("Cookie", &format!("ffrtmp_session={cookie}"))], "");
    assert_eq!(s, 401, "a signed-out session's cookie opens nothing");

    // A read-only key: no control buttons anywhere, and 403 if it posts anyway.
    sign_in(&b, &m, "ro", &format!("/ui/jobs/{id}"));
    assert!(b.exists("video#player"), "read-only keys may watch");
    // Pages left behind closed their event streams (a browser has six connections per
    // host): only this page's two (the job's and its children's) are open.
    let streams = || {
        let (_, text, _) = admin.bytes("/metrics", &[]);
        let text = String::from_utf8_lossy(&text).to_string();
        text.lines().find_map(|l| l.strip_prefix("ffrtmp_event_subscribers ")?.parse::<f64>().ok()).unwrap_or(-1.0)
    };
    wait_until(Duration::from_secs(10), "only this page's event streams open", || streams() == 2.0);
    assert_eq!(b.count("[data-action]"), 0, "no job controls for read-only keys");
    assert!(!b.exists("a[href=\"/ui/submit\"]") && !b.exists("a[href=\"/ui/webhooks\"]"));
    {
        let cookie = b.cookie("ffrtmp_session").unwrap();
        let csrf = b.exec("return document.querySelector('meta[name=\"csrf-token\"]').content", vec![]);
        let t = std::time::Instant::now();
        let r = m.api().raw(
            "POST",
            &format!("/jobs/{id}/retry"),
            &[("Cookie", &format!("ffrtmp_session={cookie}")), ("X-CSRF-Token", csrf.as_str().unwrap())],
            "",
        );
        eprintln!("DEBUG direct ro {r:?} in {:?}", t.elapsed());
        for p in ["/health", "/jobs"] {
            let v = b.exec_async("const [p, done] = arguments; setTimeout(() => done('timeout'), 4000); fetch(p).then(r => done(r.status)).catch(e => done(String(e)));", vec![json!(p)]);
            eprintln!("DEBUG ro GET {p} {v}");
        }
        let v = b.exec_async("const [p, t, done] = arguments; setTimeout(() => done('timeout'), 4000); fetch(p, {method: 'POST', headers: {'X-CSRF-Token': t}}).then(r => done(r.status)).catch(e => done(String(e)));", vec![json!(format!("/jobs/{id}/retry")), csrf.clone()]);
        eprintln!("DEBUG ro POST {v}");
        let port = m.url.rsplit(':').next().unwrap().to_string();
        let out = std::process::Command::new("ss")
            .args(["-tn", "state", "established", &format!("( dport = :{port} )")])
            .output()
            .unwrap();
        eprintln!("DEBUG conns {}", String::from_utf8_lossy(&out.stdout));
        let v = b.exec("return performance.getEntriesByType('resource').map(e => e.name + ' ' + Math.round(e.duration) + ' ' + e.responseEnd)", vec![]);
        eprintln!("DEBUG resources {v}");
    }
    assert_eq!(post_in_page(&b, &format!("/jobs/{id}/retry"), true), (403, "forbidden".to_string()));
    b.console_errors();
    b.goto(&format!("{}/ui/jobs", m.url));
    assert!(b.count("tbody tr") >= 1 && !b.exists(".bulk") && !b.exists("input[name=job]"));
    b.goto(&format!("{}/ui/nodes", m.url));
    assert!(b.count(".node") >= 1 && !b.exists("[data-post]") && !b.exists("[data-delete]"));
    b.assert_no_console_errors("read-only pages");
    b.goto(&format!("{}/ui/submit", m.url));
    let refusal = b.text("p.error");
    assert!(refusal.contains("may not submit"), "{refusal:?} at {}: {}", b.path(), b.text("body"));
    b.console_errors();

    // An admin revokes every console session: the next page asks to sign in again.
    let (s, v) = admin.call("DELETE", "/sessions", None);
    assert_eq!((s, v["revoked"].as_u64()), (200, Some(1)));
    b.goto(&format!("{}/ui/jobs", m.url));
    assert!(b.path().starts_with("/ui/login"), "revoked: {}", b.path());
    assert_eq!(admin.status(&id), "completed", "nothing the refused posts asked for happened");
}
