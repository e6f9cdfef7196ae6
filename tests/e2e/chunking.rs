//! Issue 16: one long encode on many workers. Real ffmpeg cuts a `testsrc2` source
//! into chunks on two workers and stitches them; the result is checked against the
//! source frame by frame (count, timestamps, keyframe, PSNR) and sample by sample.

use crate::harness::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `secs`-long 25 fps `w`x`h` clip with a 440 Hz tone; `gop`: frames between
/// keyframes (no scene-cut keyframes).
fn make_source(path: &Path, w: u32, h: u32, secs: u32, gop: u32) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("testsrc2=size={w}x{h}:rate=25:duration={secs}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={secs}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", &gop.to_string(), "-keyint_min", &gop.to_string()])
        .args(["-sc_threshold", "0", "-c:a", "aac", "-shortest", "-y"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Decoded video frames and their presentation times.
fn frame_times(path: &Path) -> Vec<f64> {
    let out = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "json"])
            .arg(path),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["frames"].as_array().unwrap().iter().map(|f| f["pts_time"].as_str().unwrap().parse().unwrap()).collect()
}

/// Decoded audio samples (per channel) of the first audio stream.
fn audio_samples(path: &Path) -> usize {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-ac", "1", "-f", "s16le", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout.len() / 2
}

/// Average PSNR (dB) of `a` against `reference`.
fn psnr(a: &Path, reference: &Path) -> f64 {
    let out = run_ok(Command::new("ffmpeg").args(["-hide_banner", "-i"]).arg(a).arg("-i").arg(reference).args([
        "-lavfi",
        "[0:v][1:v]psnr",
        "-f",
        "null",
        "-",
    ]));
    let at = out.rfind("average:").expect("psnr summary");
    out[at + 8..].split_whitespace().next().unwrap().parse().unwrap()
}

/// The first video packet is a keyframe.
fn starts_with_keyframe(path: &Path) -> bool {
    let flags = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags"])
            .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
            .arg(path),
    );
    flags.trim_start().starts_with('K')
}

fn children(api: &Api, id: &str) -> Vec<Value> {
    api.job(id)["children"].as_array().cloned().unwrap_or_default()
}

fn chunk_ids(api: &Api, id: &str) -> Vec<String> {
    children(api, id)
        .iter()
        .filter(|c| c["label"].as_str().is_some_and(|l| l.starts_with("chunk_")))
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// A master and two one-slot workers sharing an input root.
struct ChunkFarm {
    api: Api,
    master: TestMaster,
    workers: Vec<TestWorker>,
    inputs: tempfile::TempDir,
}

impl ChunkFarm {
    fn start() -> ChunkFarm {
        let inputs = tmpdir();
        let master = TestMaster::start(&["--heartbeat-interval", "0.5", "--retry-backoff-ms", "50"]);
        let flags = ["--input-root", inputs.path().to_str().unwrap(), "--max-concurrent-jobs", "1"];
        let workers = vec![TestWorker::start(&master, &flags), TestWorker::start(&master, &flags)];
        ChunkFarm { api: master.api(), master, workers, inputs }
    }
    fn source(&self, name: &str) -> PathBuf {
        self.inputs.path().join(name)
    }
}

/// Output `name` of job `id` downloaded under `dir` (keeping its folders).
fn download(api: &Api, id: &str, name: &str, dir: &Path) -> PathBuf {
    let (s, body, _) = api.bytes(&format!("/jobs/{id}/outputs/{name}"), &[]);
    assert_eq!(s, 200, "download {name}");
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

/// The stitched output of a completed chunked job, downloaded.
fn stitched(api: &Api, id: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let outputs = api.outputs(id);
    assert!(outputs.iter().any(|o| o["name"] == name), "{name} in {outputs:?}");
    let dir = tmpdir();
    let path = download(api, id, name, dir.path());
    (dir, path)
}

#[test]
fn a_long_encode_is_cut_encoded_on_two_workers_and_stitched_frame_exact() {
    let farm = ChunkFarm::start();
    let api = farm.api.clone();
    let src = farm.source("src.mp4");
    make_source(&src, 640, 360, 20, 50);
    let id = api.submit(json!({"parameters": {"input": "src.mp4", "codec": "h264", "preset": "veryfast", "crf": 23,
        "output": "film.mp4", "chunking": {"enabled": true, "chunk_seconds": 5}}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(180));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    let kids = done["children"].as_array().unwrap().clone();
    let labels: Vec<&str> = kids.iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["probe", "chunk_001", "chunk_002", "chunk_003", "chunk_004", "audio", "stitch"]);
    // Cut on the source's keyframes (every 2 s): each chunk's window starts on one.
    let starts: Vec<f64> = kids[1..5]
        .iter()
        .map(|c| api.job(c["id"].as_str().unwrap())["parameters"]["start_seconds"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(starts.iter().all(|s| (s % 2.0).abs() < 1e-6), "{starts:?}");
    // Chunks ran on both workers, two of them at the same time.
    let chunks: Vec<&Value> = kids[1..5].iter().collect();
    let nodes: std::collections::HashSet<&str> = chunks.iter().map(|c| c["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "chunks spread over both workers: {chunks:?}");
    let overlapping = chunks.iter().enumerate().any(|(i, a)| {
        chunks[i + 1..].iter().any(|b| {
            a["node_id"] != b["node_id"]
                && a["started_at"].as_str().max(b["started_at"].as_str())
                    < a["completed_at"].as_str().min(b["completed_at"].as_str())
        })
    });
    assert!(overlapping, "two chunks ran at the same time on different workers: {chunks:?}");
    // The stitched film: every source frame once, monotonic, a keyframe first.
    let (dir, film) = stitched(&api, &id, "film.mp4");
    let times = frame_times(&film);
    assert_eq!(times.len(), frame_times(&src).len(), "frame count equals the source's");
    assert!(times.windows(2).all(|w| w[1] > w[0]), "monotonic timestamps");
    assert!((times.last().unwrap() - 19.96).abs() < 0.04 && times[0].abs() < 0.04, "{:?}", &times[..3]);
    let (_, w, h, duration) = probe_video(&film);
    assert_eq!((w, h), (640, 360));
    assert!((duration - 20.0).abs() <= 0.05, "duration {duration}");
    assert!(starts_with_keyframe(&film));
    // As good as one pass with the same settings.
    let single = dir.path().join("single.mp4");
    run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&src)
            .args(["-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-y"])
            .arg(&single),
    );
    let (chunked, one_pass) = (psnr(&film, &src), psnr(&single, &src));
    assert!((chunked - one_pass).abs() <= 0.5, "PSNR chunked {chunked:.2} dB vs one pass {one_pass:.2} dB");
    // The sound was encoded once: no gap at any boundary.
    let (ours, theirs) = (audio_samples(&film), audio_samples(&src));
    assert!(ours.abs_diff(theirs) <= 1024, "audio samples {ours} vs the source's {theirs}");
}

#[test]
fn a_failed_chunk_is_retried_alone_a_lost_workers_chunk_moves_and_a_cancel_stops_every_chunk() {
    let mut farm = ChunkFarm::start();
    let api = farm.api.clone();
    make_source(&farm.source("src.mp4"), 640, 360, 16, 50);
    let submit = || {
        api.submit(json!({"max_retries": 2, "parameters": {"input": "src.mp4", "preset": "medium", "threads": 1,
            "output": "film.mkv", "chunking": {"chunk_seconds": 4}}}))
    };
    let running_chunk = |parent: &str, except: &[String]| -> (String, Vec<i32>) {
        let mut found = (String::new(), Vec::new());
        wait_until(Duration::from_secs(60), "a chunk running", || {
            for c in chunk_ids(&api, parent).into_iter().filter(|c| !except.contains(c)) {
                let pids = ffmpeg_pids(&c);
                if !pids.is_empty() {
                    found = (c, pids);
                    return true;
                }
            }
            false
        });
        found
    };
    // A chunk whose encoder dies is retried by itself; the others keep their attempt.
    let p = submit();
    let (victim, pids) = running_chunk(&p, &[]);
    for pid in pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let done = wait_terminal(&api, &p, Duration::from_secs(180));
    assert_eq!(done["status"], "completed", "{done}");
    for c in chunk_ids(&api, &p) {
        assert_eq!(api.job(&c)["attempt"], if c == victim { 2 } else { 1 }, "chunk {c}");
    }
    let (_d, film) = stitched(&api, &p, "film.mkv");
    assert_eq!(frame_times(&film).len(), 400);
    // A worker lost in the middle of a chunk: the chunk completes on the other one and
    // the stitch waits for it.
    let p = submit();
    let (moved, pids) = running_chunk(&p, &[]);
    let lost_node = api.job(&moved)["node_id"].as_str().unwrap().to_string();
    let lost = farm.workers.iter().position(|w| w.node_id == lost_node).unwrap();
    farm.workers[lost].kill9();
    for pid in pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let done = wait_terminal(&api, &p, Duration::from_secs(180));
    assert_eq!(done["status"], "completed", "{done}");
    let after = api.job(&moved);
    assert_eq!(after["status"], "completed");
    assert_ne!(after["node_id"].as_str().unwrap(), lost_node, "the chunk moved to the surviving worker");
    let kids = done["children"].as_array().unwrap().clone();
    let stitch = kids.iter().find(|c| c["label"] == "stitch").unwrap();
    assert!(stitch["started_at"].as_str() >= after["completed_at"].as_str(), "the stitch waited for the moved chunk");
    let (_d, film) = stitched(&api, &p, "film.mkv");
    assert_eq!(frame_times(&film).len(), 400);
    // Cancel of the parent: every running chunk's ffmpeg ends.
    farm.workers[lost] = TestWorker::start(
        &farm.master,
        &["--input-root", farm.inputs.path().to_str().unwrap(), "--max-concurrent-jobs", "1"],
    );
    let p = submit();
    let (first, _) = running_chunk(&p, &[]);
    let (second, _) = running_chunk(&p, std::slice::from_ref(&first));
    let (s, v) = api.post(&format!("/jobs/{p}/cancel"), json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(wait_terminal(&api, &p, Duration::from_secs(30))["status"], "canceled");
    wait_until(Duration::from_secs(15), "chunks' ffmpeg gone", || {
        ffmpeg_pids(&first).is_empty() && ffmpeg_pids(&second).is_empty()
    });
    for c in children(&api, &p) {
        assert!(c["status"] == "canceled" || c["label"] == "probe", "{c}");
    }
}

#[test]
fn sparse_keyframes_auto_mode_refusals_and_a_chunked_ladder() {
    let farm = ChunkFarm::start();
    let api = farm.api.clone();
    // One keyframe in the whole source: cuts at exact times, trimmed frame-accurately.
    let sparse = farm.source("sparse.mp4");
    make_source(&sparse, 320, 180, 10, 1000);
    let id = api.submit(json!({"parameters": {"input": "sparse.mp4", "preset": "ultrafast", "crf": 20,
        "chunking": {"chunk_seconds": 3}}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(chunk_ids(&api, &id).len(), 3);
    let (_d, out) = stitched(&api, &id, "output.mp4");
    let times = frame_times(&out);
    assert_eq!(times.len(), 250);
    assert!(times.windows(2).all(|w| w[1] > w[0]));
    assert!(psnr(&out, &sparse) > 35.0, "no frame shifted at a cut");
    assert!(starts_with_keyframe(&out));
    // Auto: a 10 s source is under the threshold, so it is one whole encode.
    let id = api.submit(json!({"parameters": {"input": "sparse.mp4", "preset": "ultrafast", "output": "whole.mp4",
        "chunking": "auto"}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    let labels: Vec<&str> = done["children"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["probe", "encode"]);
    let (_d, whole) = stitched(&api, &id, "whole.mp4");
    assert_eq!(frame_times(&whole).len(), 250);
    // What can never be chunked is refused with the reason.
    for (body, why) in [
        (json!({"parameters": {"chunking": true}}), "needs an input"),
        (json!({"parameters": {"input": "sparse.mp4", "output": "o.flv", "chunking": true}}), "must be one of"),
        (json!({"parameters": {"input": "sparse.mp4", "realtime": true, "chunking": true}}), "never chunked"),
        (json!({"queue": "live", "parameters": {"input": "sparse.mp4", "chunking": true}}), "never chunked"),
        (json!({"parameters": {"input": "sparse.mp4", "chunking": {"chunk_seconds": 0}}}), "chunk_seconds"),
        (json!({"parameters": {"input": "sparse.mp4", "probe_keyframes": true}}), "set by the master"),
    ] {
        let (s, v) = api.post("/jobs", body.clone());
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    // A chunked ladder: each rendition is cut on segment boundaries, stitched, packaged.
    make_source(&farm.source("ladder.mp4"), 640, 360, 8, 50);
    let id = api.submit(json!({"parameters": {"input": "ladder.mp4", "preset": "ultrafast",
        "chunking": {"chunk_seconds": 4},
        "package": {"format": "hls", "segment_seconds": 2,
            "ladder": [{"height": 360, "bitrate": "400k"}, {"height": 180, "bitrate": "150k"}]}}}));
    let done = wait_terminal(&api, &id, Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    let labels: Vec<&str> = done["children"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    for l in ["360p_c001", "360p_c002", "360p", "180p_c001", "180p_c002", "180p", "package"] {
        assert!(labels.contains(&l), "{l} in {labels:?}");
    }
    let pkg = tmpdir();
    for o in api.outputs(&id) {
        download(&api, &id, o["name"].as_str().unwrap(), pkg.path());
    }
    for variant in ["360p", "180p"] {
        let playlist = std::fs::read_to_string(pkg.path().join("hls").join(variant).join("index.m3u8")).unwrap();
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        assert_eq!(durations.len(), 4, "{playlist}");
        assert!(durations.iter().all(|d| (d - 2.0).abs() <= 0.1), "{variant}: {playlist}");
        let frames = frame_times(&pkg.path().join("hls").join(variant).join("index.m3u8"));
        assert_eq!(frames.len(), 200, "{variant}: every frame once");
    }
}
