//! Issue 15: job graphs, ABR ladders packaged as HLS and DASH, thumbnails, templates.
//! Real ffmpeg on tiny `testsrc2` sources; the package is checked with ffprobe and
//! decoded end to end with ffmpeg.

use crate::harness::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A `secs`-long `w`x`h` test clip with sound (`extra` ffmpeg output options).
pub(crate) fn make_source(path: &Path, w: u32, h: u32, secs: u32, extra: &[&str]) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("testsrc2=size={w}x{h}:rate=25:duration={secs}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={secs}")])
        .args(extra)
        .args(["-shortest", "-y"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Every output of `id` downloaded under `dir`, keeping their paths; the records.
fn download_all(api: &Api, id: &str, dir: &Path) -> Vec<Value> {
    let outputs = api.outputs(id);
    for o in &outputs {
        let name = o["name"].as_str().unwrap();
        let (s, body, _) = api.bytes(&format!("/jobs/{id}/outputs/{name}"), &[]);
        assert_eq!(s, 200, "download {name}");
        assert_eq!(sha256_hex(&body), o["sha256"].as_str().unwrap(), "{name} arrives as stored");
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    outputs
}

fn children(api: &Api, id: &str) -> Vec<Value> {
    api.job(id)["children"].as_array().cloned().unwrap_or_default()
}

fn child<'a>(kids: &'a [Value], label: &str) -> &'a Value {
    kids.iter().find(|c| c["label"] == label).unwrap_or_else(|| panic!("no child {label} in {kids:?}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (start, end) of a child's run, from its record.
fn interval(c: &Value) -> (String, String) {
    (c["started_at"].as_str().unwrap().to_string(), c["completed_at"].as_str().unwrap().to_string())
}

/// A master and two one-slot workers sharing an input root with `src.mp4`, a 6 s
/// 640x360 clip with sound.
struct LadderFarm {
    api: Api,
    workers: Vec<TestWorker>,
    _master: TestMaster,
    _inputs: tempfile::TempDir,
}

impl LadderFarm {
    fn start() -> LadderFarm {
        let inputs = tmpdir();
        make_source(&inputs.path().join("src.mp4"), 640, 360, 6, &["-c:v", "libx264", "-preset", "ultrafast"]);
        let m = TestMaster::start(&[]);
        let flags = ["--input-root", inputs.path().to_str().unwrap(), "--max-concurrent-jobs", "1"];
        let workers = vec![TestWorker::start(&m, &flags), TestWorker::start(&m, &flags)];
        LadderFarm { api: m.api(), workers, _master: m, _inputs: inputs }
    }
}

#[test]
fn a_ladder_fans_out_over_two_workers_and_packages_hls_and_dash() {
    let farm = LadderFarm::start();
    let (api, w1, w2) = (farm.api.clone(), &farm.workers[0], &farm.workers[1]);
    // realtime: each rendition reads its source at its own pace (6 s), so two running
    // one after the other could not overlap.
    let id = api.submit(json!({"parameters": {"input": "src.mp4", "preset": "ultrafast", "realtime": true,
        "package": {"format": "both", "segment_seconds": 2,
            "ladder": [{"height": 720, "bitrate": "1500k"}, {"height": 360, "bitrate": "400k", "max_bitrate": "500k"},
                       {"height": 240, "bitrate": "200k"}],
            "thumbnails": {"every_seconds": 2, "sprite": true}}}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    let kids = done["children"].as_array().unwrap().clone();
    let labels: Vec<&str> = kids.iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["probe", "360p", "240p", "audio_128k", "thumbnails", "package"], "no 720p: never upscaled");
    assert!(kids.iter().all(|c| c["status"] == "completed"), "{kids:?}");
    // The two renditions ran at the same time, on both workers.
    let (a, b) = (child(&kids, "360p"), child(&kids, "240p"));
    assert_ne!(a["node_id"], b["node_id"], "one rendition per worker");
    let ((s1, e1), (s2, e2)) = (interval(a), interval(b));
    assert!((&s1).max(&s2) < (&e1).min(&e2), "running intervals overlap: {s1}..{e1} and {s2}..{e2}");
    let nodes = [w1.node_id.as_str(), w2.node_id.as_str()];
    assert!(nodes.contains(&a["node_id"].as_str().unwrap()) && nodes.contains(&b["node_id"].as_str().unwrap()));
    // Children are listed by their parent, and name it.
    let (s, listed) = api.get(&format!("/jobs?parent_id={id}"));
    assert_eq!((s, listed["count"].as_u64()), (200, Some(6)));
    assert_eq!(api.job(a["id"].as_str().unwrap())["parent_id"], id.as_str());
    // Every rendition is readable media of its size.
    for (label, w, h) in [("360p", 640, 360), ("240p", 426, 240)] {
        let out = fetch_output(&api, child(&kids, label)["id"].as_str().unwrap());
        assert_eq!(probe_video(&out.path).1..=probe_video(&out.path).2, w..=h, "{label}");
    }
    // The package: every output of the graph, under its parent.
    let pkg = tmpdir();
    let outputs = download_all(&api, &id, pkg.path());
    let names: Vec<&str> = outputs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    for n in ["hls/master.m3u8", "dash/manifest.mpd", "thumbnails/sprite.jpg", "thumbnails/sprite.vtt", "package.tar"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let master = std::fs::read_to_string(pkg.path().join("hls/master.m3u8")).unwrap();
    assert!(master.contains("360p/index.m3u8") && master.contains("240p/index.m3u8"), "{master}");
    assert!(!master.contains("720p"), "{master}");
    assert!(master.contains("RESOLUTION=640x360") && master.contains("RESOLUTION=426x240"), "{master}");
    // Every variant names its codecs (ffmpeg leaves them out for copied video).
    let variants: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert!(variants.iter().all(|v| v.contains(r#"CODECS="avc1."#) && v.contains("mp4a.40.2")), "{master}");
    for variant in ["360p", "240p"] {
        let dir = pkg.path().join("hls").join(variant);
        let playlist = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        assert!(durations.len() >= 3, "{playlist}");
        for d in &durations[..durations.len() - 1] {
            assert!((d - 2.0).abs() <= 0.1, "{variant}: segment of {d} s in {playlist}");
        }
        // Each segment starts with a keyframe (its init segment in front of it).
        let init = std::fs::read(dir.join(playlist.lines().find_map(init_of).unwrap())).unwrap();
        for seg in playlist.lines().filter(|l| l.ends_with(".m4s")) {
            let joined = pkg.path().join(format!("{variant}-{seg}.mp4"));
            std::fs::write(&joined, [init.clone(), std::fs::read(dir.join(seg)).unwrap()].concat()).unwrap();
            let flags = run_ok(
                Command::new("ffprobe")
                    .args(["-v", "error", "-select_streams", "v:0"])
                    .args(["-show_entries", "packet=flags", "-read_intervals", "%+#1", "-of", "csv=p=0"])
                    .arg(&joined),
            );
            assert!(flags.trim_start().starts_with('K'), "{variant}/{seg} starts with a keyframe: {flags}");
        }
        // Each variant decodes end to end.
        run_ok(
            Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(dir.join("index.m3u8")).args(["-f", "null", "-"]),
        );
    }
    // The multivariant playlist decodes with every variant mapped.
    run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(pkg.path().join("hls/master.m3u8"))
            .args(["-map", "0", "-f", "null", "-"]),
    );
    // DASH: the same renditions, and ffprobe opens it.
    let mpd = std::fs::read_to_string(pkg.path().join("dash/manifest.mpd")).unwrap();
    assert!(mpd.contains(r#"width="640" height="360""#) && mpd.contains(r#"width="426" height="240""#), "{mpd}");
    let streams = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_type,width,height", "-of", "csv=p=0"])
            .arg(pkg.path().join("dash/manifest.mpd")),
    );
    assert!(streams.contains("video,640,360") && streams.contains("video,426,240"), "{streams}");
    // Thumbnails: one every 2 s, a 3x1 sprite of 160-wide tiles, and its index.
    assert_eq!(names.iter().filter(|n| n.starts_with("thumbnails/thumb_")).count(), 3);
    let (_, sw, sh, _) = probe_video(&pkg.path().join("thumbnails/sprite.jpg"));
    assert_eq!((sw, sh), (480, 90));
    let vtt = std::fs::read_to_string(pkg.path().join("thumbnails/sprite.vtt")).unwrap();
    assert!(vtt.contains("00:00:04.000 --> 00:00:06.000\nsprite.jpg#xywh=320,0,160,90"), "{vtt}");
    // The whole package as one tar.
    let listing = run_ok(Command::new("tar").arg("tf").arg(pkg.path().join("package.tar")));
    assert!(listing.contains("hls/master.m3u8") && listing.contains("dash/manifest.mpd"), "{listing}");
}

fn init_of(line: &str) -> Option<String> {
    line.strip_prefix("#EXT-X-MAP:URI=\"").map(|r| r.trim_end_matches('"').to_string())
}

#[test]
fn an_hevc_template_keeps_a_10_bit_source_10_bit_and_freezes_its_parameters() {
    let inputs = tmpdir();
    make_source(&inputs.path().join("ten.mkv"), 320, 180, 1, &["-c:v", "ffv1", "-pix_fmt", "yuv420p10le"]);
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--input-root", inputs.path().to_str().unwrap()]);
    let id = api.submit(json!({"template": "hevc-mp4", "parameters": {"input": "ten.mkv", "preset": "ultrafast"}}));
    let job = wait_terminal(&api, &id, Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    let p = &job["parameters"];
    assert_eq!((p["template"].as_str(), p["template_version"].as_i64()), (Some("hevc-mp4"), Some(0)));
    assert_eq!((p["codec"].as_str(), p["preset"].as_str()), (Some("h265"), Some("ultrafast")), "own value wins");
    let out = fetch_output(&api, &id);
    let pix = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,pix_fmt",
                "-of",
                "csv=p=0",
            ])
            .arg(&out.path),
    );
    assert_eq!(pix.trim(), "hevc,yuv420p10le");
}

#[test]
fn templates_are_versioned_and_a_job_keeps_what_it_was_submitted_with() {
    let m = TestMaster::start(&["--api-key", "adm", "--read-api-key", "ro"]);
    let (admin, ro) = (m.api().with_key("adm"), m.api().with_key("ro"));
    let (s, list) = ro.get("/templates");
    assert_eq!(s, 200);
    let builtins: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for b in ["hls-ladder", "dash-ladder", "mp4-1080p", "hevc-mp4", "thumbnails"] {
        assert!(builtins.contains(&b), "{b} in {builtins:?}");
    }
    let body =
        json!({"name": "small", "description": "tiny", "parameters": {"resolution": "160x90", "bitrate": "300k"}});
    assert_eq!(ro.post("/templates", body.clone()).0, 403, "read-only keys do not write");
    let (s, v1) = admin.post("/templates", body);
    assert_eq!((s, v1["version"].as_i64()), (201, Some(1)), "{v1}");
    let (s, v2) = admin.call("PUT", "/templates/small", Some(json!({"parameters": {"resolution": "320x180"}})));
    assert_eq!((s, v2["version"].as_i64()), (200, Some(2)), "{v2}");
    let id = admin.submit(json!({"template": "small", "parameters": {"duration": 1}}));
    admin.call("PUT", "/templates/small", Some(json!({"parameters": {"resolution": "640x360"}})));
    let p = admin.job(&id)["parameters"].clone();
    assert_eq!(p, json!({"resolution": "320x180", "duration": 1, "template": "small", "template_version": 2}));
    assert_eq!(ro.get("/templates/small?version=1").1["parameters"]["bitrate"], "300k");
    assert_eq!(ro.get("/templates/small").1["version"], 3);
    // Bad templates and bad names are refused; built-ins are not replaced or deleted.
    let (s, e) = admin.post("/templates", json!({"name": "bad", "parameters": {"codec": "mpeg1"}}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_template")), "{e}");
    assert_eq!(admin.post("/templates", json!({"name": "Bad Name", "parameters": {}})).0, 400);
    assert_eq!(admin.post("/templates", json!({"name": "hls-ladder", "parameters": {}})).0, 409);
    assert_eq!(admin.call("DELETE", "/templates/hls-ladder", None).0, 409);
    let (s, e) = admin.post("/jobs", json!({"template": "nope"}));
    assert_eq!((s, e["error"].as_str()), (404, Some("template_not_found")));
    // A name no template can have is refused before any lookup (NUL bytes included).
    let (s, e) = admin.post("/jobs", json!({"template": "a\u{0}b"}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_template")), "{e}");
    assert_eq!(admin.call("DELETE", "/templates/a%00b", None).0, 400);
    assert_eq!(admin.call("DELETE", "/templates/small", None).0, 200);
    assert_eq!(ro.get("/templates/small").0, 404);
    assert_eq!(admin.job(&id)["parameters"]["resolution"], "320x180", "the job kept its parameters");
}

/// A job that fails for its input until `fix` exists under the input root.
fn failing_job(api: &Api, file: &str) -> String {
    api.submit(json!({"max_retries": 0, "parameters": {"input": file, "resolution": "160x90", "preset": "ultrafast"}}))
}

#[test]
fn after_orders_jobs_fails_dependants_and_a_retry_makes_them_wait_again() {
    let inputs = tmpdir();
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--input-root", inputs.path().to_str().unwrap()]);
    let tiny = json!({"resolution": "160x90", "fps": 10, "duration": 1, "preset": "ultrafast"});
    let a = api.submit(json!({"parameters": tiny}));
    let b = api.submit(json!({"parameters": tiny, "after": [a]}));
    let jb = wait_terminal(&api, &b, Duration::from_secs(60));
    let ja = api.job(&a);
    assert_eq!((ja["status"].as_str(), jb["status"].as_str()), (Some("completed"), Some("completed")));
    assert!(jb["started_at"].as_str() >= ja["completed_at"].as_str(), "b ran after a: {ja} {jb}");
    assert_eq!(jb["after"], json!([a]));
    // Unknown dependencies are refused.
    let (s, e) = api.post("/jobs", json!({"after": ["01a00000-0000-7000-8000-000000000000"]}));
    assert_eq!((s, e["error"].as_str()), (400, Some("unknown_dependency")), "{e}");
    assert_eq!(api.post("/jobs", json!({"after": ["not-an-id"]})).0, 400);
    // A failed dependency fails what waits for it …
    let f = failing_job(&api, "later.mp4");
    let d = api.submit(json!({"parameters": tiny, "after": [f]}));
    let e = api.submit(json!({"parameters": tiny, "after": [d]}));
    assert_eq!(wait_terminal(&api, &f, Duration::from_secs(60))["status"], "failed");
    for id in [&d, &e] {
        let j = wait_terminal(&api, id, Duration::from_secs(30));
        assert_eq!((j["status"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("dependency_failed")));
        assert!(j["started_at"].is_null(), "{id} never ran");
    }
    // … and once it is retried (and succeeds), they wait for it again and then run.
    std::fs::copy(fetch_output(&api, &a).path, inputs.path().join("later.mp4")).unwrap();
    assert_eq!(api.post(&format!("/jobs/{f}/retry"), json!({})).0, 200);
    for id in [&f, &d, &e] {
        assert_eq!(wait_terminal(&api, id, Duration::from_secs(60))["status"], "completed", "{id}");
    }
}

/// A package job over a realtime 6 s source (renditions take their time).
fn slow_package(api: &Api, max_retries: i64) -> String {
    api.submit(
        json!({"max_retries": max_retries, "parameters": {"input": "src.mp4", "preset": "ultrafast", "realtime": true,
        "package": {"format": "hls", "segment_seconds": 2, "audio": [],
            "ladder": [{"height": 360, "bitrate": "400k"}, {"height": 240, "bitrate": "200k"}]}}}),
    )
}

fn wait_running(api: &Api, parent: &str, label: &str) -> String {
    let mut id = String::new();
    wait_until(Duration::from_secs(60), &format!("{label} running"), || {
        let kids = children(api, parent);
        match kids.iter().find(|c| c["label"] == label) {
            Some(c) => {
                id = c["id"].as_str().unwrap().to_string();
                c["status"] == "processing" && !ffmpeg_pids(&id).is_empty()
            }
            None => false,
        }
    });
    id
}

#[test]
fn a_parent_cancel_stops_every_child_and_a_parent_retry_reruns_only_the_failed_one() {
    let farm = LadderFarm::start();
    let api = farm.api.clone();
    // Cancel: both renditions' ffmpeg processes end, every child and the parent are canceled.
    let p = slow_package(&api, 0);
    let r1 = wait_running(&api, &p, "360p");
    let r2 = wait_running(&api, &p, "240p");
    let (s, v) = api.post(&format!("/jobs/{p}/cancel"), json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(wait_terminal(&api, &p, Duration::from_secs(30))["status"], "canceled");
    wait_until(Duration::from_secs(15), "renditions' ffmpeg gone", || {
        ffmpeg_pids(&r1).is_empty() && ffmpeg_pids(&r2).is_empty()
    });
    for c in children(&api, &p) {
        assert!(c["status"] == "canceled" || c["label"] == "probe", "{c}");
    }
    // Retry: one rendition is killed (no retries left) and fails; the parent fails; a
    // retry of the parent reruns that rendition only, then the package.
    let p = slow_package(&api, 0);
    let victim = wait_running(&api, &p, "240p");
    for pid in ffmpeg_pids(&victim) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let failed = wait_terminal(&api, &p, Duration::from_secs(60));
    assert_eq!(failed["status"], "failed", "{failed}");
    let kids = failed["children"].as_array().unwrap().clone();
    assert_eq!(child(&kids, "240p")["status"], "failed");
    assert_eq!(child(&kids, "package")["failure_reason"], "dependency_failed");
    let kept = child(&kids, "360p").clone();
    assert_eq!(kept["status"], "completed");
    let (s, v) = api.post(&format!("/jobs/{p}/retry"), json!({}));
    assert_eq!(s, 200, "{v}");
    let done = wait_terminal(&api, &p, Duration::from_secs(90));
    assert_eq!(done["status"], "completed", "{done}");
    let kids = done["children"].as_array().unwrap().clone();
    assert_eq!(child(&kids, "360p")["completed_at"], kept["completed_at"], "the completed rendition was not rerun");
    assert_eq!(api.job(kept["id"].as_str().unwrap())["attempt"], 1);
    assert_eq!(api.job(&victim)["attempt"], 2, "the failed one ran again");
    assert!(api.outputs(&p).iter().any(|o| o["name"] == "hls/master.m3u8"));
}

#[test]
fn a_master_restart_in_the_middle_of_a_graph_resumes_it_without_rerunning_anything() {
    let inputs = tmpdir();
    make_source(&inputs.path().join("src.mp4"), 640, 360, 6, &["-c:v", "libx264", "-preset", "ultrafast"]);
    let db_dir = tmpdir();
    let port = free_port();
    let mut m = TestMaster::start_on(port, db_dir.path(), &[]);
    let api = m.api();
    let root = inputs.path().to_str().unwrap();
    let _w = TestWorker::start(&m, &["--input-root", root, "--max-concurrent-jobs", "1"]);
    let p = slow_package(&api, 3);
    wait_running(&api, &p, "360p");
    let probe = child(&children(&api, &p), "probe").clone();
    m.restart();
    let done = wait_terminal(&api, &p, Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    let kids = done["children"].as_array().unwrap().clone();
    assert_eq!(child(&kids, "probe")["completed_at"], probe["completed_at"], "the probe did not run again");
    for c in &kids {
        assert_eq!(api.job(c["id"].as_str().unwrap())["attempt"], 1, "{} ran once", c["label"]);
    }
    let labels: Vec<&str> = kids.iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["probe", "360p", "240p", "package"], "planned once");
}

#[test]
fn a_submitted_graph_runs_children_in_order_pauses_as_one_and_refuses_cycles() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let flags = ["--max-concurrent-jobs", "1"];
    let (_w1, _w2) = (TestWorker::start(&m, &flags), TestWorker::start(&m, &flags));
    let tiny = json!({"resolution": "160x90", "fps": 10, "duration": 1, "preset": "ultrafast"});
    let slow = json!({"resolution": "160x90", "fps": 10, "duration": 4, "preset": "ultrafast", "realtime": true});
    // Refused: a cycle, an unknown ref, parameters on the parent.
    let (s, e) = api.post(
        "/jobs",
        json!({"children": [
        {"ref": "a", "parameters": tiny, "after": ["c"]}, {"ref": "b", "parameters": tiny, "after": ["a"]},
        {"ref": "c", "parameters": tiny, "after": ["b"]}]}),
    );
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_graph")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("cycle"), "{e}");
    let (s, e) = api.post("/jobs", json!({"children": [{"ref": "a", "parameters": tiny, "after": ["zz"]}]}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_graph")), "{e}");
    let (s, _) = api.post("/jobs", json!({"parameters": tiny, "children": [{"parameters": tiny}]}));
    assert_eq!(s, 400);
    let before = api.get("/jobs").1["count"].as_u64().unwrap();
    assert_eq!(before, 0, "nothing refused was stored");
    // Ordered: `last` waits for two parallel jobs.
    let p = api.submit(json!({"children": [
        {"ref": "last", "parameters": tiny, "after": ["x", "y"]},
        {"ref": "x", "parameters": slow}, {"ref": "y", "parameters": slow}]}));
    // Pause and resume the parent: its running children follow.
    wait_until(Duration::from_secs(30), "both running", || {
        children(&api, &p).iter().filter(|c| c["status"] == "processing").count() == 2
    });
    assert_eq!(api.post(&format!("/jobs/{p}/pause"), json!({})).0, 200);
    wait_until(Duration::from_secs(10), "parent paused", || api.status(&p) == "paused");
    let kids = children(&api, &p);
    assert!(kids.iter().filter(|c| c["label"] != "last").all(|c| c["status"] == "paused"), "{kids:?}");
    assert_eq!(child(&kids, "last")["status"], "pending", "still waiting");
    assert_eq!(api.post(&format!("/jobs/{p}/resume"), json!({})).0, 200);
    let done = wait_terminal(&api, &p, Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    let kids = done["children"].as_array().unwrap().clone();
    let last = child(&kids, "last");
    for r in ["x", "y"] {
        assert!(last["started_at"].as_str() >= child(&kids, r)["completed_at"].as_str(), "last ran after {r}");
    }
    assert_eq!(api.job(last["id"].as_str().unwrap())["after"].as_array().unwrap().len(), 2);
}

#[test]
fn every_audio_track_and_text_subtitle_reaches_the_hls_package() {
    let inputs = tmpdir();
    let srt = inputs.path().join("s.srt");
    std::fs::write(&srt, "1\n00:00:00,500 --> 00:00:02,000\nHello\n\n2\n00:00:02,500 --> 00:00:03,500\nWorld\n")
        .unwrap();
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=880:duration=4",
        ])
        .arg("-i")
        .arg(&srt)
        .args(["-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-c:a", "aac", "-c:s", "mov_text", "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra"])
        .args(["-metadata:s:s:0", "language=eng", "-shortest", "-y"])
        .arg(inputs.path().join("multi.mp4"))
        .status()
        .unwrap();
    assert!(ok.success());
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--input-root", inputs.path().to_str().unwrap()]);
    let id = api.submit(json!({"parameters": {"input": "multi.mp4", "preset": "ultrafast",
        "package": {"format": "hls", "segment_seconds": 2, "ladder": [{"height": 180, "bitrate": "200k"}]}}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(90));
    assert_eq!(done["status"], "completed", "{done}");
    let labels: Vec<&str> = done["children"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["probe", "180p", "audio_128k", "subtitles", "package"]);
    let pkg = tmpdir();
    download_all(&api, &id, pkg.path());
    let master = std::fs::read_to_string(pkg.path().join("hls/master.m3u8")).unwrap();
    assert_eq!(master.matches("TYPE=AUDIO").count(), 2, "both audio tracks: {master}");
    assert!(master.contains(r#"TYPE=SUBTITLES,GROUP-ID="subs",NAME="eng",LANGUAGE="eng""#), "{master}");
    assert!(master.contains(r#"SUBTITLES="subs""#), "{master}");
    for audio in ["audio_128k_0", "audio_128k_1"] {
        let codecs = run_ok(
            Command::new("ffprobe")
                .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
                .arg(pkg.path().join(format!("hls/{audio}/index.m3u8"))),
        );
        let found: Vec<&str> = codecs.lines().filter(|l| !l.is_empty()).collect();
        assert!(!found.is_empty() && found.iter().all(|c| *c == "aac"), "{audio}: {codecs}");
    }
    let subs = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
            .arg(pkg.path().join("hls/subs_0/index.m3u8")),
    );
    assert!(subs.lines().any(|l| l == "webvtt") && !subs.contains("aac"), "{subs}");
    let vtt = std::fs::read_to_string(pkg.path().join("hls/subs_0/subs.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT") && vtt.contains("Hello") && vtt.contains("World"), "{vtt}");
}

#[test]
fn a_thumbnails_template_writes_its_folders_into_a_shared_library() {
    let inputs = tmpdir();
    make_source(&inputs.path().join("clip.mp4"), 320, 180, 4, &["-c:v", "libx264", "-preset", "ultrafast"]);
    let shared = tmpdir();
    let lib = shared.path().to_str().unwrap();
    let m = TestMaster::start(&["--output-root", lib]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--input-root", inputs.path().to_str().unwrap(), "--output-root", lib]);
    let id = api.submit(json!({"template": "thumbnails", "parameters": {"input": "clip.mp4",
        "destination": format!("file://{lib}/show/"), "package": {"thumbnails": {"every_seconds": 2, "sprite": true}}}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    let labels: Vec<&str> = done["children"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["probe", "thumbnails"], "no ladder, no package step");
    let vtt = shared.path().join("show/thumbnails/sprite.vtt");
    let record = api.outputs(&id).into_iter().find(|o| o["name"] == "thumbnails/sprite.vtt").expect("recorded");
    assert_eq!(record["location"], format!("file://{}", vtt.display()));
    assert_eq!(sha256_hex(&std::fs::read(&vtt).unwrap()), record["sha256"].as_str().unwrap());
    assert!(shared.path().join("show/thumbnails/thumb_00002.jpg").exists());
    let (s, body, _) = api.bytes(&format!("/jobs/{id}/outputs/thumbnails/sprite.vtt"), &[]);
    assert_eq!((s, body), (200, std::fs::read(&vtt).unwrap()), "served from the mounted library");
}
