//! Media in and out, as data: where a job's input comes from ([`InputRef`]), which
//! network inputs the operator allows (the SSRF rule), what ffprobe said about an
//! input ([`InputInfo`]), and what a stored output may be called.

use super::allow::HostPattern;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// Longest stored output name.
pub const MAX_ARTIFACT_NAME: usize = 200;
/// Longest input URL.
pub const MAX_INPUT_URL: usize = 4096;

/// Where a job's input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    /// A path under one of the worker's `--input-root`s.
    Local(String),
    /// An `http://` or `https://` URL the worker downloads first.
    Http { url: String, host: String, port: u16 },
    /// Another job's stored output: `artifact://<job-id>/<name>`.
    Artifact { job_id: uuid::Uuid, name: String },
    /// A file uploaded to the master: `upload://<upload-id>/<name>`.
    Upload { id: uuid::Uuid, name: String },
    /// An object in an S3-compatible bucket the operator allows: `s3://bucket/key`.
    S3 { bucket: String, key: String },
}

/// Where a job's outputs are stored (`destination` parameter).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    /// The master's artifact store (the default).
    #[default]
    Artifact,
    /// `s3://bucket/prefix/`: written by the worker with its own credentials, recorded
    /// on the master, downloaded through a presigned URL.
    S3 { bucket: String, prefix: String },
    /// `file:///dir/`: a shared filesystem (a Tdarr-style library) under the worker's
    /// `--output-root`, written under a temporary name and renamed into place.
    Path { dir: String },
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, String> {
        if s.is_empty() || s == "artifact" {
            return Ok(Destination::Artifact);
        }
        if let Some(dir) = s.strip_prefix("file://") {
            check_library_dir(dir)?;
            let dir = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
            return Ok(Destination::Path { dir });
        }
        let Some(rest) = s.strip_prefix("s3://") else {
            return Err(format!(
                "destination must be 'artifact', s3://bucket/prefix/ or file:///dir/, not '{}'",
                s.chars().take(64).collect::<String>()
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        if !prefix.is_empty() {
            check_object_key(prefix)?;
        }
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        Ok(Destination::S3 { bucket: bucket.to_string(), prefix })
    }

    /// The bucket this destination writes to, if any.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Destination::S3 { bucket, .. } => Some(bucket),
            _ => None,
        }
    }

    /// Where an output named `name` goes (`None`: the master's artifact store).
    pub fn location_of(&self, name: &str) -> Option<String> {
        match self {
            Destination::Artifact => None,
            Destination::S3 { bucket, prefix } => Some(format!("s3://{bucket}/{prefix}{name}")),
            Destination::Path { dir } => Some(format!("file://{dir}{name}")),
        }
    }
}

/// A library directory: absolute, at most 1024 bytes, no control characters, no `.` or
/// `..` segments (the worker still checks it is under one of its `--output-root`s).
pub fn check_library_dir(dir: &str) -> Result<(), String> {
    let ok = dir.starts_with('/')
        && dir.len() <= 1024
        && !dir.chars().any(char::is_control)
        && !dir.split('/').any(|seg| seg == ".." || seg == ".");
    if ok {
        Ok(())
    } else {
        Err("a file:// destination must be an absolute directory (at most 1024 bytes, no '.' or '..' segments)".into())
    }
}

/// The path of a `file://` location.
pub fn file_path(location: &str) -> Option<&str> {
    location.strip_prefix("file://").filter(|p| p.starts_with('/'))
}

/// An S3 bucket name: 3–63 lower-case letters, digits, '.', '-'.
pub fn check_bucket(b: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&b.len())
        && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !b.starts_with(['.', '-'])
        && !b.contains("..");
    if ok { Ok(()) } else { Err(format!("'{}' is not a valid bucket name", b.chars().take(64).collect::<String>())) }
}

/// An object key: 1–1024 bytes, no control characters, no `..` segment.
pub fn check_object_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 1024 || k.chars().any(char::is_control) || k.split('/').any(|seg| seg == "..") {
        return Err("an object key must be 1 to 1024 bytes with no control characters or '..' segments".into());
    }
    Ok(())
}

/// `s3://bucket/key` split, as stored in an output's location.
pub fn split_s3(location: &str) -> Option<(&str, &str)> {
    location.strip_prefix("s3://")?.split_once('/')
}

impl InputRef {
    /// Classify an `input` parameter (already free of lavfi sources). Local paths are
    /// checked by `params::check_input_path`; URLs here.
    pub fn parse(s: &str) -> Result<InputRef, String> {
        let Some((scheme, rest)) = s.split_once("://") else { return Ok(InputRef::Local(s.to_string())) };
        if s.len() > MAX_INPUT_URL || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "input URL must be 1 to {MAX_INPUT_URL} characters with no spaces or control characters"
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let default = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                if authority.contains('@') {
                    return Err("input URL must not carry credentials (user:password@)".into());
                }
                let (host, port) = split_authority(authority)
                    .ok_or_else(|| format!("input URL has no valid host: '{}'", super::redact::redact_urls(s)))?;
                Ok(InputRef::Http { url: s.to_string(), host, port: port.unwrap_or(default) })
            }
            "artifact" => {
                let (job, name) = rest
                    .split_once('/')
                    .ok_or_else(|| "an artifact input is artifact://<job-id>/<output name>".to_string())?;
                let job_id =
                    uuid::Uuid::parse_str(job).map_err(|_| format!("artifact input: '{job}' is not a job id"))?;
                check_artifact_name(name)?;
                Ok(InputRef::Artifact { job_id, name: name.to_string() })
            }
            "upload" => {
                let (id, name) = rest
                    .split_once('/')
                    .ok_or_else(|| "an uploaded input is upload://<upload-id>/<name> (POST /uploads)".to_string())?;
                let id = uuid::Uuid::parse_str(id).map_err(|_| format!("upload input: '{id}' is not an upload id"))?;
                check_artifact_name(name)?;
                Ok(InputRef::Upload { id, name: name.to_string() })
            }
            "s3" => {
                let (bucket, key) = rest.split_once('/').ok_or_else(|| "an s3 input is s3://bucket/key".to_string())?;
                check_bucket(bucket)?;
                check_object_key(key)?;
                Ok(InputRef::S3 { bucket: bucket.to_string(), key: key.to_string() })
            }
            other => Err(format!(
                "input scheme '{other}://' is not supported; use a path, http(s)://, s3://, artifact:// or upload://"
            )),
        }
    }

    /// The file name the downloaded input keeps (its extension helps ffprobe).
    pub fn local_name(&self) -> String {
        let base = match self {
            InputRef::Local(p) => p.rsplit('/').next().unwrap_or(p),
            InputRef::Http { url, .. } => url.split(['?', '#']).next().unwrap_or("").rsplit('/').next().unwrap_or(""),
            InputRef::Artifact { name, .. } | InputRef::Upload { name, .. } => name,
            InputRef::S3 { key, .. } => key.rsplit('/').next().unwrap_or(key),
        };
        let ext = base
            .rsplit_once('.')
            .map(|(_, e)| e)
            .filter(|e| !e.is_empty() && e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()));
        match ext {
            Some(e) => format!("input.{}", e.to_ascii_lowercase()),
            None => "input".into(),
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, lower-cased.
fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    ok.then(|| (host.to_ascii_lowercase(), port))
}

/// An address a farm must not be steered into by a job (cloud metadata, the master's
/// own loopback services, the operator's private network), unless the operator named
/// the host explicitly.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// The SSRF rule of URL inputs: the host must match an `--input-allow` pattern, and a
/// host that is (or resolves to) an internal address must be named by a pattern
/// without a wildcard. `addrs` are the addresses the host resolved to (or the literal).
pub fn check_input_host(host: &str, port: u16, addrs: &[IpAddr], allow: &[HostPattern]) -> Result<(), String> {
    check_host("input", "--input-allow", host, port, addrs, allow)
}

/// The same SSRF rule for any outbound destination (`what` names it, `rule` the flag).
pub fn check_host(
    what: &str,
    rule: &str,
    host: &str,
    port: u16,
    addrs: &[IpAddr],
    allow: &[HostPattern],
) -> Result<(), String> {
    super::allow::check_destination(what, host, port, allow, rule)?;
    if let Some(ip) = addrs.iter().find(|ip| is_internal(**ip)) {
        let named = allow.iter().any(|p| !p.is_wildcard() && p.matches(host, port));
        if !named {
            return Err(format!(
                "{what} host {host} is an internal address ({ip}); only a host named exactly in {rule} may be, never through a wildcard"
            ));
        }
    }
    if addrs.is_empty() {
        return Err(format!("{what} host {host} does not resolve"));
    }
    Ok(())
}

/// A name a stored output may have: one path segment of letters, digits, '.', '_'
/// and '-', not starting with '.' (no hidden files, no `..`).
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    // A package's files keep their place in it: up to four directories deep, each part
    // a plain name.
    let segment_ok = |seg: &str| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let ok = !name.is_empty()
        && name.len() <= MAX_ARTIFACT_NAME
        && name.split('/').count() <= 5
        && name.split('/').all(segment_ok);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "output name '{}' must be 1 to {MAX_ARTIFACT_NAME} letters, digits, '.', '_' or '-' (in up to 5 parts separated by '/'), no part starting with '.'",
            name.chars().take(MAX_ARTIFACT_NAME).collect::<String>()
        ))
    }
}

/// The media type of a stored output, from its extension.
pub fn content_type_of(name: &str) -> String {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        // Streaming packages: registered types players expect, which mime tables disagree on.
        "m3u8" => "application/vnd.apple.mpegurl".into(),
        "mpd" => "application/dash+xml".into(),
        "m4s" => "video/iso.segment".into(),
        "ts" => "video/mp2t".into(),
        "mkv" => "video/x-matroska".into(),
        _ => mime_guess::from_ext(&ext).first_or_octet_stream().essence_str().to_string(),
    }
}

/// What ffprobe found in an input, kept on the job as `input_info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InputInfo {
    /// Container format (ffprobe's `format_name`).
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    pub streams: Vec<StreamInfo>,
    /// The first video stream's keyframe times (a chunked job's probe step only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyframes: Option<Vec<f64>>,
}

/// One stream of an input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamInfo {
    /// video, audio, subtitle, data.
    pub kind: String,
    pub codec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix_fmt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// The stream's language tag (e.g. `eng`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The codec profile (e.g. `High`, `Main 10`), bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The codec level as ffprobe gives it (H.264: 31 = 3.1; HEVC: level × 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i64>,
}

impl InputInfo {
    pub fn video(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.kind == "video")
    }
}

/// ffprobe's `-print_format json -show_format -show_streams` output, as far as we read it.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    #[serde(default)]
    format_name: String,
    duration: Option<String>,
    bit_rate: Option<String>,
    size: Option<String>,
}

#[derive(Deserialize)]
struct ProbeStream {
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    bits_per_raw_sample: Option<String>,
    sample_rate: Option<String>,
    channels: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    tags: std::collections::HashMap<String, Value>,
    profile: Option<String>,
    level: Option<i64>,
}

/// `30000/1001` → 29.97; `0/0` → None.
fn rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d > 0.0 && n > 0.0).then(|| ((n / d) * 1000.0).round() / 1000.0)
}

/// Bit depth from an explicit sample size, else from the pixel format's name.
fn bit_depth(raw: Option<&str>, pix_fmt: Option<&str>) -> Option<u32> {
    if let Some(b) = raw.and_then(|b| b.parse::<u32>().ok()).filter(|b| *b > 0) {
        return Some(b);
    }
    let p = pix_fmt?;
    for depth in [16, 14, 12, 10, 9] {
        if p.contains(&format!("p{depth}")) {
            return Some(depth);
        }
    }
    Some(8)
}

/// Read ffprobe's JSON. An input with no audio or video stream is not media.
pub fn parse_ffprobe(json: &[u8]) -> Result<InputInfo, String> {
    let p: Probe = serde_json::from_slice(json).map_err(|e| format!("unreadable ffprobe output: {e}"))?;
    let format = p.format.ok_or("ffprobe found no container format")?;
    let streams: Vec<StreamInfo> = p
        .streams
        .iter()
        .map(|s| {
            let video = s.codec_type == "video";
            StreamInfo {
                kind: s.codec_type.clone(),
                codec: s.codec_name.clone(),
                width: s.width.filter(|_| video),
                height: s.height.filter(|_| video),
                frame_rate: if video {
                    s.avg_frame_rate.as_deref().and_then(rate).or_else(|| s.r_frame_rate.as_deref().and_then(rate))
                } else {
                    None
                },
                bit_depth: if video { bit_depth(s.bits_per_raw_sample.as_deref(), s.pix_fmt.as_deref()) } else { None },
                pix_fmt: s.pix_fmt.clone().filter(|_| video),
                sample_rate: s.sample_rate.as_deref().and_then(|r| r.parse().ok()),
                channels: s.channels,
                // A language code is letters (ISO 639) and at most a region: anything
                // else is dropped rather than carried into playlists.
                language: s
                    .tags
                    .get("language")
                    .and_then(Value::as_str)
                    .filter(|l| l.len() <= 16 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                    .map(str::to_string),
                profile: s
                    .profile
                    .clone()
                    .filter(|p| p.len() <= 32 && p.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')),
                level: s.level.filter(|l| (0..=1000).contains(l)),
            }
        })
        .collect();
    if !streams.iter().any(|s| s.kind == "video" || s.kind == "audio") {
        return Err(format!("no audio or video stream (format '{}')", format.format_name));
    }
    let stream_duration = p
        .streams
        .iter()
        .filter_map(|s| s.duration.as_deref()?.parse::<f64>().ok())
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
    Ok(InputInfo {
        format: format.format_name,
        duration_seconds: format
            .duration
            .as_deref()
            .and_then(|d| d.parse::<f64>().ok())
            .or(stream_duration)
            .filter(|d| d.is_finite() && *d > 0.0),
        bit_rate: format.bit_rate.as_deref().and_then(|b| b.parse().ok()),
        size_bytes: format.size.as_deref().and_then(|b| b.parse().ok()),
        streams,
        keyframes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_classified() {
        let id = "0190c7a4-0000-7000-8000-000000000001";
        let cases: Vec<(String, Result<InputRef, &str>)> = vec![
            ("clips/a.mp4".into(), Ok(InputRef::Local("clips/a.mp4".into()))),
            (
                "https://cdn.example.com/v/a.mov?sig=1".into(),
                Ok(InputRef::Http {
                    url: "https://cdn.example.com/v/a.mov?sig=1".into(),
                    host: "cdn.example.com".into(),
                    port: 443,
                }),
            ),
            (
                "http://127.0.0.1:8000/a.mp4".into(),
                Ok(InputRef::Http { url: "http://127.0.0.1:8000/a.mp4".into(), host: "127.0.0.1".into(), port: 8000 }),
            ),
            (
                format!("artifact://{id}/out.mp4"),
                Ok(InputRef::Artifact { job_id: id.parse().unwrap(), name: "out.mp4".into() }),
            ),
            ("http://user:pw@example.com/a.mp4".into(), Err("credentials")),
            ("ftp://example.com/a.mp4".into(), Err("not supported")),
            (
                "s3://media-in/clips/a.mp4".into(),
                Ok(InputRef::S3 { bucket: "media-in".into(), key: "clips/a.mp4".into() }),
            ),
            ("s3://Bad_Bucket/key.mp4".into(), Err("bucket name")),
            ("s3://bucket".into(), Err("s3://bucket/key")),
            ("s3://bucket/a/../b".into(), Err("'..'")),
            ("artifact://not-a-job/out.mp4".into(), Err("not a job id")),
            (
                format!("upload://{id}/clip.mov"),
                Ok(InputRef::Upload { id: id.parse().unwrap(), name: "clip.mov".into() }),
            ),
            ("upload://nope/clip.mov".into(), Err("not an upload id")),
            (format!("upload://{id}/../x"), Err("output name")),
            (format!("artifact://{id}/../x"), Err("output name")),
            ("http:///a.mp4".into(), Err("no valid host")),
            ("http://example.com:0/a".into(), Err("no valid host")),
            ("http://exa mple.com/a".into(), Err("no spaces")),
        ];
        for (input, want) in cases {
            match (InputRef::parse(&input), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{input}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{input}: {e}"),
                (got, w) => panic!("{input}: got {got:?}, want {w:?}"),
            }
        }
        assert_eq!(InputRef::parse("https://h/x/clip.MOV?a=b").unwrap().local_name(), "input.mov");
        assert_eq!(InputRef::parse("https://h/x/").unwrap().local_name(), "input");
    }

    #[test]
    fn destinations() {
        let cases = [
            ("", Ok(Destination::Artifact)),
            ("artifact", Ok(Destination::Artifact)),
            ("s3://out", Ok(Destination::S3 { bucket: "out".into(), prefix: "".into() })),
            ("s3://out/tv/show", Ok(Destination::S3 { bucket: "out".into(), prefix: "tv/show/".into() })),
            ("s3://out/tv/", Ok(Destination::S3 { bucket: "out".into(), prefix: "tv/".into() })),
            ("s3://x/", Err("bucket")),
            ("file:///mnt/library/tv", Ok(Destination::Path { dir: "/mnt/library/tv/".into() })),
            ("file://relative/x", Err("absolute")),
            ("file:///mnt/../etc", Err("absolute")),
            ("ftp://x/y", Err("destination must be")),
            ("s3://out/../etc", Err("'..'")),
        ];
        for (d, want) in cases {
            match (Destination::parse(d), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{d}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{d}: {e}"),
                (got, w) => panic!("{d}: got {got:?}, want {w:?}"),
            }
        }
        assert_eq!(split_s3("s3://b/k/x.mp4"), Some(("b", "k/x.mp4")));
        let lib = Destination::parse("file:///lib/tv").unwrap();
        assert_eq!(lib.location_of("a.mp4").as_deref(), Some("file:///lib/tv/a.mp4"));
        assert_eq!(file_path("file:///lib/tv/a.mp4"), Some("/lib/tv/a.mp4"));
        assert_eq!(Destination::Artifact.location_of("a.mp4"), None);
    }

    #[test]
    fn the_ssrf_rule() {
        let allow = |ps: &[&str]| ps.iter().map(|p| HostPattern::parse(p).unwrap()).collect::<Vec<_>>();
        let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        let public = ip("93.184.216.34");
        type Case = (&'static str, Vec<IpAddr>, Vec<HostPattern>, Result<(), &'static str>);
        let cases: Vec<Case> = vec![
            ("cdn.example.com", public.clone(), allow(&["cdn.example.com"]), Ok(())),
            ("cdn.example.com", public.clone(), allow(&["*.example.com"]), Ok(())),
            ("cdn.example.com", public.clone(), allow(&[]), Err("allowed: none")),
            ("evil.com", public.clone(), allow(&["*.example.com"]), Err("--input-allow")),
            // A wildcard never admits an internal address, even by a public-looking name.
            ("meta.example.com", ip("169.254.169.254"), allow(&["*.example.com"]), Err("internal address")),
            ("anything", ip("10.0.0.5"), allow(&["*"]), Err("internal address")),
            ("127.0.0.1", ip("127.0.0.1"), allow(&["*"]), Err("internal address")),
            ("127.0.0.1", ip("127.0.0.1"), allow(&["127.0.0.1"]), Ok(())),
            ("::1", ip("::1"), allow(&["*"]), Err("internal address")),
            ("mapped", ip("::ffff:192.168.1.1"), allow(&["*"]), Err("internal address")),
            ("fd.example.com", ip("fd00::1"), allow(&["*.example.com"]), Err("internal address")),
            ("gone.example.com", vec![], allow(&["*.example.com"]), Err("does not resolve")),
        ];
        for (host, addrs, allow, want) in cases {
            let got = check_input_host(host, 443, &addrs, &allow);
            match want {
                Ok(()) => assert!(got.is_ok(), "{host}: {got:?}"),
                Err(w) => assert!(got.as_ref().is_err_and(|e| e.contains(w)), "{host}: {got:?}, want {w}"),
            }
        }
    }

    #[test]
    fn artifact_names_and_types() {
        for ok in ["out.mp4", "master.m3u8", "seg_001.m4s", "a-b.c_d", "hls/360p/seg_00001.m4s"] {
            assert!(check_artifact_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", ".hidden", "..", "a/../b", "/a", "a//b", "a/", "a/b/c/d/e/f", "a\\b", "a b", "ü.mp4", &"x".repeat(201)]
        {
            assert!(check_artifact_name(bad).is_err(), "{bad}");
        }
        let types = [
            ("a.mp4", "video/mp4"),
            ("a.webm", "video/webm"),
            ("a.mkv", "video/x-matroska"),
            ("a.m3u8", "application/vnd.apple.mpegurl"),
            ("a.mpd", "application/dash+xml"),
            ("a.ts", "video/mp2t"),
            ("a.unknownext", "application/octet-stream"),
        ];
        for (name, want) in types {
            assert_eq!(content_type_of(name), want, "{name}");
        }
    }

    #[test]
    fn ffprobe_json_is_read() {
        let json = br#"{"streams":[
            {"codec_type":"video","codec_name":"h264","width":1920,"height":1080,"avg_frame_rate":"30000/1001","r_frame_rate":"30000/1001","pix_fmt":"yuv420p10le","bits_per_raw_sample":"10","duration":"2.002"},
            {"codec_type":"audio","codec_name":"aac","sample_rate":"48000","channels":2,"avg_frame_rate":"0/0"}],
            "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"2.021000","bit_rate":"1234567","size":"311000"}}"#;
        let info = parse_ffprobe(json).unwrap();
        assert_eq!(info.duration_seconds, Some(2.021));
        assert_eq!((info.bit_rate, info.size_bytes), (Some(1234567), Some(311000)));
        let v = info.video().unwrap();
        assert_eq!(
            (v.codec.as_str(), v.width, v.height, v.frame_rate, v.bit_depth),
            ("h264", Some(1920), Some(1080), Some(29.97), Some(10))
        );
        let a = &info.streams[1];
        assert_eq!((a.kind.as_str(), a.sample_rate, a.channels, a.frame_rate), ("audio", Some(48000), Some(2), None));
        // Depth from the pixel format when the stream does not say; duration from the
        // streams when the container does not.
        let json = br#"{"streams":[{"codec_type":"video","codec_name":"vp9","width":160,"height":90,"avg_frame_rate":"15/1","pix_fmt":"yuv420p","duration":"1.5"}],"format":{"format_name":"matroska,webm"}}"#;
        let info = parse_ffprobe(json).unwrap();
        assert_eq!((info.video().unwrap().bit_depth, info.duration_seconds), (Some(8), Some(1.5)));
        // Not media.
        for bad in [&br#"{"streams":[],"format":{"format_name":"tty"}}"#[..], br#"{"streams":[]}"#, b"not json"] {
            assert!(parse_ffprobe(bad).is_err());
        }
    }
}
