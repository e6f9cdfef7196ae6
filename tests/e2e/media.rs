//! Issue 14: media in and out. Outputs are stored on the master (checksummed, fenced
//! by attempt, never half-listed) and downloaded from it; inputs come from a worker's
//! input root, a real HTTP server (one that drops the connection mid-file, one that
//! answers 404), or another job's output; every input is probed with ffprobe.

use crate::harness::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `tests/e2e/media_server.py` serving `root` on a free loopback port.
struct MediaServer {
    child: Child,
    port: u16,
}

impl MediaServer {
    fn start(root: &std::path::Path) -> MediaServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/media_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(root)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the media server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        MediaServer { child, port: line.trim().parse().expect("the server printed its port") }
    }
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for MediaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny real clip (h264 + aac, 160x90, `secs` long).
fn make_clip(path: &std::path::Path, secs: u32) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("testsrc2=size=160x90:rate=10:duration={secs}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={secs}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-y"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn outputs_are_stored_on_the_master_and_downloadable_from_any_worker() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let mut first = TestWorker::start(&m, &[]);
    let job = |api: &Api| api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 1}}));
    let a = job(&api);
    assert_eq!(wait_terminal(&api, &a, Duration::from_secs(60))["status"], "completed");
    // A second worker on another work dir stands in for another machine.
    first.terminate();
    let second = TestWorker::start(&m, &[]);
    let b = job(&api);
    let jb = wait_terminal(&api, &b, Duration::from_secs(60));
    assert_eq!((jb["status"].as_str(), jb["node_id"].as_str()), (Some("completed"), Some(second.node_id.as_str())));
    let mut total = 0;
    for id in [&a, &b] {
        let j = api.job(id);
        let out = fetch_output(&api, id);
        assert_eq!(j["outputs"][0], out.record, "GET /jobs/{{id}} lists the same output");
        assert_eq!(out.record["location"], format!("artifact://{id}/output.mp4"));
        assert_eq!(out.record["content_type"], "video/mp4");
        let (codec, w, h, _) = probe_video(&out.path);
        assert_eq!((codec.as_str(), w, h), ("h264", 160, 90));
        total += out.record["bytes"].as_u64().unwrap();
    }
    // Neither worker keeps a copy once the master has it.
    wait_until(Duration::from_secs(10), "local copies removed", || {
        !first.work_dir.join(format!("job-{a}")).exists() && !second.work_dir.join(format!("job-{b}")).exists()
    });
    assert_eq!(api.metric("ffrtmp_artifact_bytes_stored") as u64, total);

    // HTTP semantics of a download: ETag = SHA-256, a filename, ranges.
    let sha = api.outputs(&a)[0]["sha256"].as_str().unwrap().to_string();
    let path = format!("/jobs/{a}/outputs/output.mp4");
    let (s, whole, headers) = api.bytes(&path, &[]);
    assert_eq!(s, 200);
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    assert_eq!(header("etag"), Some(format!("\"{sha}\"")));
    assert!(header("content-disposition").unwrap().contains("filename=\"output.mp4\""));
    assert_eq!(header("accept-ranges").as_deref(), Some("bytes"));
    let (s, part, headers) = api.bytes(&path, &[("Range", "bytes=10-19")]);
    assert_eq!((s, part.as_slice()), (206, &whole[10..20]));
    assert!(headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-range") && v.starts_with("bytes 10-19/")));
    // The job's sequence number works as well as its id.
    let seq = api.job(&a)["sequence_number"].as_i64().unwrap();
    assert_eq!(api.bytes(&format!("/jobs/{seq}/outputs/output.mp4"), &[]).1, whole);

    // Missing things are 404 with a JSON body naming what is missing.
    let (s, e) = api.get(&format!("/jobs/{a}/outputs/other.mp4"));
    assert_eq!((s, e["error"].as_str()), (404, Some("output_not_found")), "{e}");
    let (s, e) = api.get("/jobs/00000000-0000-4000-8000-000000000000/outputs");
    assert_eq!((s, e["error"].as_str()), (404, Some("job_not_found")), "{e}");
    let (s, e) = api.get(&format!("/jobs/{a}/outputs/.hidden"));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_output_name")), "{e}");

    // Deleting frees the bytes early; the job stays.
    let (s, gone) = api.call("DELETE", &format!("/jobs/{a}/outputs"), None);
    assert_eq!((s, gone["outputs"].as_array().map(Vec::len)), (200, Some(1)), "{gone}");
    assert!(api.outputs(&a).is_empty());
    assert_eq!(api.get(&path).0, 404);
    assert!(!m.dir.join("artifacts").join(&a).exists(), "the file is gone from the store");
    assert_eq!(api.status(&a), "completed");
    assert_eq!(api.metric("ffrtmp_artifact_bytes_stored") as u64, total - whole.len() as u64);
}

#[test]
fn url_and_artifact_inputs_are_downloaded_probed_and_transcoded() {
    let media = tmpdir();
    make_clip(&media.path().join("clip.mp4"), 3);
    std::fs::write(media.path().join("notmedia.mp4"), b"this is not a video, just text\n".repeat(100)).unwrap();
    let server = MediaServer::start(media.path());
    let m = TestMaster::start(&["--input-allow", "127.0.0.1", "--retry-backoff-ms", "50"]);
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);

    // A URL input whose server drops the connection half-way the first time; no
    // duration given, so progress and ETA come from the probe. Real time, so reports
    // arrive during the encode.
    let id = api.submit(json!({"parameters": {"input": server.url("drop/clip.mp4"), "realtime": true}}));
    let mut seen: Vec<f64> = Vec::new();
    let mut eta = false;
    wait_until(Duration::from_secs(60), "the URL input's encode to finish", || {
        let j = api.job(&id);
        if j["status"] == "processing"
            && j["progress_detail"]["phase"].is_null()
            && let Some(p) = j["progress_detail"]["percent"].as_f64()
        {
            seen.push(p);
            eta |= j["progress_detail"]["eta_seconds"].as_f64().is_some_and(|e| e > 0.0);
        }
        std::thread::sleep(Duration::from_millis(100));
        j["status"] == "completed" || j["status"] == "failed"
    });
    let j = api.job(&id);
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["attempt"], 1, "the dropped connection was retried inside the attempt: {j}");
    assert!(seen.iter().any(|p| *p > 0.0 && *p < 100.0), "progress moved during the encode: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "monotonic: {seen:?}");
    assert!(eta, "an ETA was given for a file input without a duration");
    let info = &j["input_info"];
    assert!((info["duration_seconds"].as_f64().unwrap() - 3.0).abs() < 0.2, "{info}");
    let video = info["streams"].as_array().unwrap().iter().find(|s| s["kind"] == "video").unwrap();
    assert_eq!(
        (video["codec"].as_str(), video["width"].as_u64(), video["height"].as_u64()),
        (Some("h264"), Some(160), Some(90))
    );
    assert_eq!(video["frame_rate"], 10.0);
    let (_, _, _, d) = probe_video(&fetch_output(&api, &id).path);
    assert!((d - 3.0).abs() < 0.3, "the whole input was encoded: {d}");

    // Jobs chain: another job's output as input.
    let chained = api.submit(json!({"parameters": {"input": format!("artifact://{id}/output.mp4"), "codec": "vp9", "output": "chained.webm"}}));
    let j = wait_terminal(&api, &chained, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    let out = fetch_output(&api, &chained);
    assert_eq!(out.record["name"], "chained.webm");
    assert_eq!(probe_video(&out.path).0, "vp9");

    // Inputs that cannot work fail at once as input_error, never retried.
    for (what, input) in [("a 404", server.url("missing.mp4")), ("not media", server.url("notmedia.mp4"))] {
        let id = api.submit(json!({"parameters": {"input": input}}));
        let j = wait_terminal(&api, &id, Duration::from_secs(30));
        assert_eq!(
            (j["status"].as_str(), j["failure_reason"].as_str(), j["attempt"].as_i64()),
            (Some("failed"), Some("input_error"), Some(1)),
            "{what}: {j}"
        );
    }

    // Refused at submission, with the rule named.
    let refused = |input: String, code: &str, says: &str| {
        let (s, e) = api.post("/jobs", json!({"parameters": {"input": input}}));
        assert_eq!((s, e["error"].as_str()), (400, Some(code)), "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    };
    refused(format!("http://localhost:{}/clip.mp4", server.port), "input_not_allowed", "--input-allow");
    refused(format!("http://10.0.0.1:{}/clip.mp4", server.port), "input_not_allowed", "--input-allow");
    refused(format!("artifact://{id}/nope.mp4"), "input_not_found", "nope.mp4");
    refused("s3://bucket/key.mp4".into(), "bucket_not_allowed", "--s3-allow");
    refused("gopher://x/y".into(), "invalid_parameter", "not supported");
    // A wildcard never admits an internal address.
    let open = TestMaster::start(&["--input-allow", "*"]);
    let (s, e) = open.api().post("/jobs", json!({"parameters": {"input": server.url("clip.mp4")}}));
    assert_eq!((s, e["error"].as_str()), (400, Some("input_not_allowed")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("internal address"), "{e}");
}

/// A PUT whose body stops after `sent` of `declared` bytes, then the connection closes.
fn truncated_put(base: &str, path: &str, declared: usize, sent: usize) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\nx-content-sha256: {}\r\n\r\n",
        "0".repeat(64)
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b'x'; sent]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn uploads_are_fenced_checksummed_and_never_half_listed() {
    let mut m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", json!({"encoders": ["libx264"]}));
    api.register("n2", json!({"encoders": ["libx264"]}));
    let id = api.submit(json!({}));
    let job = api.claim("n1", 5.0).expect("claimed");
    let holder = job["node_id"].as_str().unwrap_or("n1").to_string();
    let store = m.dir.join("artifacts");
    let partials = |store: &std::path::Path| {
        walk(store).iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".partial")).count()
    };
    // The master dies mid-upload: after its restart nothing half-written is listed or kept.
    let addr = m.url.trim_start_matches("http://").to_string();
    let mut upload = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!(
        "PUT /jobs/{id}/outputs/out.mp4?node_id={holder}&attempt=1 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 10000000\r\nx-content-sha256: {}\r\n\r\n",
        "0".repeat(64)
    );
    upload.write_all(head.as_bytes()).unwrap();
    upload.write_all(&vec![b'x'; 300_000]).unwrap();
    wait_until(Duration::from_secs(10), "the upload to be streaming", || partials(&store) == 1);
    m.restart();
    drop(upload);
    assert_eq!(partials(&store), 0, "the restarted master removed the partial file");
    let api = m.api();
    assert!(api.outputs(&id).is_empty());
    assert_eq!(api.status(&id), "processing", "the lease survived the restart");
    let body = b"pretend this is an mp4".to_vec();
    let sha = sha256_hex(&body);
    let put = |node: &str, attempt: i64, name: &str, sha: Option<&str>, body: &[u8]| {
        let mut headers = vec![("Content-Type", "application/octet-stream")];
        if let Some(s) = sha {
            headers.push(("x-content-sha256", s));
        }
        let path = format!("/jobs/{id}/outputs/{name}?node_id={node}&attempt={attempt}");
        api.raw("PUT", &path, &headers, std::str::from_utf8(body).unwrap())
    };
    let code = |r: (u16, Value)| (r.0, r.1["error"].as_str().unwrap_or("").to_string());
    assert_eq!(code(put(&holder, 1, "out.mp4", None, &body)), (400, "missing_checksum".into()));
    assert_eq!(code(put(&holder, 1, "out.mp4", Some(&"ab".repeat(32)), &body)), (400, "checksum_mismatch".into()));
    assert_eq!(code(put(&holder, 1, ".out.mp4", Some(&sha), &body)), (400, "invalid_output_name".into()));
    assert_eq!(code(put("n2", 1, "out.mp4", Some(&sha), &body)), (409, "stale_attempt".into()));
    assert_eq!(code(put(&holder, 2, "out.mp4", Some(&sha), &body)), (409, "stale_attempt".into()));
    truncated_put(&m.url, &format!("/jobs/{id}/outputs/out.mp4?node_id={holder}&attempt=1"), 100_000, 10_000);
    assert!(api.outputs(&id).is_empty(), "nothing refused or cut short is listed");
    wait_until(Duration::from_secs(10), "no partial file left in the store", || partials(&store) == 0);
    // Completed only once the outputs it names are stored.
    let (s, e) = api.result(&job, &holder, "completed", json!({"outputs": ["out.mp4"]}));
    assert_eq!((s, e["error"].as_str()), (409, Some("outputs_missing")), "{e}");
    assert_eq!(api.status(&id), "processing");
    let (s, stored) = put(&holder, 1, "out.mp4", Some(&sha), &body);
    assert_eq!(s, 201, "{stored}");
    assert_eq!((stored["bytes"].as_u64(), stored["sha256"].as_str()), (Some(body.len() as u64), Some(sha.as_str())));
    let (s, _) = api.result(&job, &holder, "completed", json!({"outputs": ["out.mp4"]}));
    assert_eq!(s, 200);
    assert_eq!(api.status(&id), "completed");
    assert_eq!(api.bytes(&format!("/jobs/{id}/outputs/out.mp4"), &[]).1, body);
    // The lease is over: no more outputs for this job.
    assert_eq!(code(put(&holder, 1, "late.mp4", Some(&sha), &body)).0, 409);
    assert_eq!(api.outputs(&id).len(), 1);
    assert_eq!(walk(&store).len(), 1, "exactly one stored file");
    // Unfinished jobs keep their outputs.
    let other = api.submit(json!({}));
    let (s, e) = api.call("DELETE", &format!("/jobs/{other}/outputs"), None);
    assert_eq!((s, e["error"].as_str()), (409, Some("job_not_finished")), "{e}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// moto's S3 server on a free loopback port (real S3 protocol, SigV4-signed requests).
struct S3Server {
    child: Child,
    url: String,
}

impl S3Server {
    fn spawn(port: u16) -> std::io::Result<Child> {
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// A server with these buckets.
    fn start(buckets: &[&str]) -> Option<S3Server> {
        let port = free_port();
        let child = match S3Server::spawn(port) {
            Ok(c) => c,
            Err(_) => {
                assert!(std::env::var_os("CI").is_none(), "CI installs moto's server (.ci/run)");
                eprintln!("skipped: moto_server is not installed (pip install 'moto[server]')");
                return None;
            }
        };
        let s = S3Server { child, url: format!("http://127.0.0.1:{port}") };
        s.ready(buckets);
        Some(s)
    }

    fn ready(&self, buckets: &[&str]) {
        wait_until(Duration::from_secs(30), "the S3 server to answer", || ureq::get(&self.url).call().is_ok());
        for bucket in buckets {
            assert!(ureq::put(&format!("{}/{bucket}", self.url)).call().is_ok(), "bucket {bucket} created");
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Back on the same port (moto keeps nothing: the buckets are made again, empty).
    fn restart(&mut self, buckets: &[&str]) {
        self.stop();
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = S3Server::spawn(port).unwrap();
        self.ready(buckets);
    }

    /// Keys in a bucket, from an (anonymous) listing.
    fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = ureq::get(&format!("{}/{bucket}?list-type=2", self.url)).call().unwrap().into_string().unwrap();
        xml.split("<Key>").skip(1).filter_map(|k| k.split("</Key>").next()).map(str::to_string).collect()
    }

    /// The AWS_* environment that points a process at this server.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT", self.url.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Size of an object, from an (anonymous) listing of its bucket.
    fn object_size(&self, bucket: &str, key: &str) -> Option<u64> {
        let xml = ureq::get(&format!("{}/{bucket}?list-type=2", self.url)).call().ok()?.into_string().ok()?;
        let at = xml.find(&format!("<Key>{key}</Key>"))?;
        let rest = &xml[at..];
        let size = rest.split("<Size>").nth(1)?.split("</Size>").next()?;
        size.parse().ok()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn s3_inputs_and_destinations_against_a_real_s3_server() {
    let Some(s3) = S3Server::start(&["media-in", "media-out"]) else { return };
    let media = tmpdir();
    let clip = media.path().join("clip.mp4");
    make_clip(&clip, 1);
    let clip_bytes = std::fs::read(&clip).unwrap();
    ureq::put(&format!("{}/media-in/clips/clip.mp4", s3.url)).send_bytes(&clip_bytes).unwrap();
    let env = s3.env();
    let m = TestMaster::start_with_env(&["--s3-allow", "media-in,media-out"], &env);
    let api = m.api();
    let _w = TestWorker::start_with_env(&m, &[], &env);

    // An object as input, a bucket as destination.
    let id = api.submit(json!({"parameters": {"input": "s3://media-in/clips/clip.mp4", "destination": "s3://media-out/renditions/", "codec": "vp9", "output": "clip.webm"}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    assert!((j["input_info"]["duration_seconds"].as_f64().unwrap() - 1.0).abs() < 0.2, "{j}");
    let record = &j["outputs"][0];
    assert_eq!(record["location"], "s3://media-out/renditions/clip.webm", "{record}");
    let size = s3.object_size("media-out", "renditions/clip.webm").expect("the worker wrote the object");
    assert_eq!(size, record["bytes"].as_u64().unwrap());
    // A download is a redirect to a presigned URL; following it gives the same bytes.
    let no_redirects = ureq::AgentBuilder::new().redirects(0).build();
    let resp = no_redirects.get(&format!("{}/jobs/{id}/outputs/clip.webm", m.url)).call();
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(resp.status(), 307);
    let signed = resp.header("location").unwrap().to_string();
    assert!(signed.starts_with(&s3.url) && signed.contains("X-Amz-Signature="), "{signed}");
    let (s, body, _) = api.bytes(&format!("/jobs/{id}/outputs/clip.webm"), &[]);
    assert_eq!((s, sha256_hex(&body)), (200, record["sha256"].as_str().unwrap().to_string()), "the object's bytes");
    assert_eq!(api.metric("ffrtmp_artifact_bytes_stored"), 0.0, "nothing of it is on the master's disk");
    // Chained from the bucket through its artifact name, into the master's store.
    let chained =
        api.submit(json!({"parameters": {"input": format!("artifact://{id}/clip.webm"), "output": "again.mp4"}}));
    let j = wait_terminal(&api, &chained, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(probe_video(&fetch_output(&api, &chained).path).0, "h264");

    // A missing object fails at once; buckets the operator did not allow are refused.
    let missing = api.submit(json!({"parameters": {"input": "s3://media-in/clips/none.mp4"}}));
    let j = wait_terminal(&api, &missing, Duration::from_secs(60));
    assert_eq!((j["status"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("input_error")), "{j}");
    for params in [json!({"input": "s3://private/x.mp4"}), json!({"destination": "s3://private/out/"})] {
        let (s, e) = api.post("/jobs", json!({"parameters": params}));
        assert_eq!((s, e["error"].as_str()), (400, Some("bucket_not_allowed")), "{e}");
    }
}

#[test]
fn an_s3_outage_during_the_upload_delays_the_job_and_loses_nothing() {
    let Some(mut s3) = S3Server::start(&["media-out"]) else { return };
    let env = s3.env();
    let m = TestMaster::start_with_env(&["--s3-allow", "media-out"], &env);
    let api = m.api();
    let _w = TestWorker::start_with_env(&m, &[], &env);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 2, "realtime": true,
        "destination": "s3://media-out/out/"}}));
    wait_until(Duration::from_secs(30), "the encode to run", || api.status(&id) == "processing");
    s3.stop();
    wait_until(Duration::from_secs(30), "the worker to be trying to upload", || {
        api.job(&id)["progress_detail"]["phase"] == "uploading"
    });
    assert_eq!(api.status(&id), "processing", "not completed while the object is not stored");
    s3.restart(&["media-out"]);
    let j = wait_terminal(&api, &id, Duration::from_secs(120));
    assert_eq!((j["status"].as_str(), j["attempt"].as_i64()), (Some("completed"), Some(1)), "{j}");
    assert_eq!(s3.keys("media-out"), vec!["out/output.mp4".to_string()], "exactly one stored copy");
    assert_eq!(api.outputs(&id).len(), 1);
}

#[test]
fn a_shared_library_destination_gets_whole_files_under_the_output_root() {
    let shared = tmpdir();
    let library = shared.path().join("library");
    std::fs::create_dir_all(&library).unwrap();
    let lib = library.to_str().unwrap();
    // The master mounts the same share, so it can serve what the workers wrote.
    let m = TestMaster::start(&["--output-root", lib]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--output-root", lib]);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 1,
        "destination": format!("file://{lib}/tv/show"), "output": "episode.mp4"}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    let file = library.join("tv/show/episode.mp4");
    let record = &j["outputs"][0];
    assert_eq!(record["location"], format!("file://{}", file.display()));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(sha256_hex(&bytes), record["sha256"].as_str().unwrap());
    let names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["episode.mp4".to_string()], "no temporary file is left in the library");
    assert_eq!(api.bytes(&format!("/jobs/{id}/outputs/episode.mp4"), &[]).1, bytes);
    assert!(!m.dir.join("artifacts").join(&id).exists(), "nothing went to the master's store");
    // Outside every output root: refused by the worker before any encode, for good.
    let outside = shared.path().join("elsewhere");
    let id = api.submit(json!({"parameters": {"duration": 1, "destination": format!("file://{}", outside.display())}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(30));
    assert_eq!((j["status"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("user_error")), "{j}");
    assert!(j["error"].as_str().unwrap().contains("--output-root"), "{j}");
    assert!(!outside.exists());
    // A master that does not mount the share says where the file is.
    let elsewhere = TestMaster::start(&[]);
    let api2 = elsewhere.api();
    let _w2 = TestWorker::start(&elsewhere, &["--output-root", lib]);
    let id = api2.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 1,
        "destination": format!("file://{lib}/films"), "output": "film.mp4"}}));
    assert_eq!(wait_terminal(&api2, &id, Duration::from_secs(60))["status"], "completed");
    let (s, e) = api2.get(&format!("/jobs/{id}/outputs/film.mp4"));
    assert_eq!((s, e["error"].as_str()), (409, Some("output_elsewhere")), "{e}");
    assert!(library.join("films/film.mp4").exists());
}

#[test]
fn the_masters_artifact_store_can_be_a_bucket() {
    let Some(s3) = S3Server::start(&["farm-store"]) else { return };
    let env = s3.env();
    let m = TestMaster::start_with_env(&["--artifact-store", "s3://farm-store/artifacts/"], &env);
    let api = m.api();
    // The worker holds no bucket credentials: it uploads to the master as usual.
    let _w = TestWorker::start(&m, &[]);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 1}}));
    assert_eq!(wait_terminal(&api, &id, Duration::from_secs(60))["status"], "completed");
    let key = format!("artifacts/{id}/a1/output.mp4");
    assert_eq!(s3.keys("farm-store"), vec![key.clone()], "stored as one whole object");
    // Listed as an artifact, downloaded through a presigned redirect (followed here).
    let out = fetch_output(&api, &id);
    assert_eq!(out.record["location"], format!("artifact://{id}/output.mp4"));
    assert_eq!(probe_video(&out.path).0, "h264");
    assert_eq!(api.metric("ffrtmp_artifact_bytes_stored") as u64, out.record["bytes"].as_u64().unwrap());
    // A body whose checksum does not match leaves no object behind.
    api.register("gpu", json!({"encoders": ["h264_nvenc"], "has_gpu": true}));
    let held = api.submit(json!({"parameters": {"codec": "h264_nvenc"}}));
    let job = api.claim("gpu", 5.0).expect("the GPU job");
    assert_eq!(job["id"], held.as_str());
    let (s, e) = api.raw(
        "PUT",
        &format!("/jobs/{held}/outputs/x.mp4?node_id=gpu&attempt=1"),
        &[("x-content-sha256", &"ab".repeat(32))],
        "not what the checksum says",
    );
    assert_eq!((s, e["error"].as_str()), (400, Some("checksum_mismatch")), "{e}");
    assert_eq!(s3.keys("farm-store"), vec![key.clone()]);
    // Deleting frees the object.
    let (s, _) = api.call("DELETE", &format!("/jobs/{id}/outputs"), None);
    assert_eq!(s, 200);
    wait_until(Duration::from_secs(10), "the object deleted", || s3.keys("farm-store").is_empty());
    assert!(!m.dir.join("artifacts").exists(), "nothing on the master's disk");
}

/// `POST /uploads` keeps what it was sent (its checksum checked when given) under a
/// safe name, and a job may name only an upload that exists.
#[test]
fn uploads_are_checked_and_only_existing_ones_are_inputs() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let (s, v) = api.raw("POST", "/uploads?name=../x.mp4", &[], "data");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_upload_name")), "{v}");
    let wrong = sha256_hex(b"other");
    let (s, v) = api.raw("POST", "/uploads?name=a.txt", &[("X-Content-SHA256", &wrong)], "data");
    assert_eq!((s, v["error"].as_str()), (400, Some("checksum_mismatch")), "{v}");
    let right = sha256_hex(b"data");
    let (s, up) = api.raw("POST", "/uploads?name=a.txt", &[("X-Content-SHA256", &right)], "data");
    assert_eq!(s, 201, "{up}");
    assert_eq!((up["bytes"].as_u64(), up["sha256"].as_str()), (Some(4), Some(right.as_str())));
    let input = up["input"].as_str().unwrap();
    let (s, body, headers) = api.bytes(&input.replace("upload://", "/uploads/"), &[]);
    assert_eq!((s, body.as_slice()), (200, b"data".as_slice()));
    assert!(headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("etag") && v.contains(&right)), "{headers:?}");
    let ghost = "upload://0190c7a4-0000-7000-8000-000000000001/a.mp4";
    let (s, v) = api.post("/jobs", json!({"parameters": {"input": ghost}}));
    assert_eq!((s, v["error"].as_str()), (400, Some("input_not_found")), "{v}");
    let (s, _) = api.post("/jobs", json!({"parameters": {"input": input}}));
    assert_eq!(s, 201, "an existing upload is a valid input");
}
