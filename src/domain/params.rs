//! Job parameters: the free-form `parameters` object of a job, checked against an
//! allow-list and turned into a typed [`JobSpec`].
//!
//! The master runs this at submission (bad input → 400 naming the problem) and the
//! worker runs it again before building an argv, so a job that slipped in through an
//! old database still cannot inject options or read outside the allowed roots.

pub use super::lavfi::{AudioTone, LavfiSource, VideoPattern};
use super::step_params::graph_fields;
pub use super::step_params::{AudioSelect, Packaging};
use serde_json::{Map, Value};

mod values;
use values::{as_bool, as_number, as_text, check_rtmp_url};
pub use values::{check_input_path, check_output_name, parse_bitrate_kbps, parse_resolution};

/// Encoders the farm knows how to drive, with the codec names users may write for them.
/// The first encoder of a row is preferred; the others are acceptable substitutes.
const CODECS: &[(&[&str], &[&str])] = &[
    (&["h264", "libx264", "x264", "avc"], &["libx264"]),
    (&["h265", "hevc", "libx265", "x265"], &["libx265"]),
    (&["vp9", "libvpx-vp9"], &["libvpx-vp9"]),
    (&["av1"], &["libsvtav1", "libaom-av1"]),
    (&["libsvtav1"], &["libsvtav1"]),
    (&["libaom-av1"], &["libaom-av1"]),
    (&["h264_nvenc", "nvenc"], &["h264_nvenc"]),
    (&["hevc_nvenc"], &["hevc_nvenc"]),
    (&["av1_nvenc"], &["av1_nvenc"]),
    (&["h264_qsv"], &["h264_qsv"]),
    (&["hevc_qsv"], &["hevc_qsv"]),
    (&["av1_qsv"], &["av1_qsv"]),
    (&["h264_vaapi"], &["h264_vaapi"]),
    (&["hevc_vaapi"], &["hevc_vaapi"]),
    (&["av1_vaapi"], &["av1_vaapi"]),
    (&["h264_videotoolbox"], &["h264_videotoolbox"]),
    (&["hevc_videotoolbox"], &["hevc_videotoolbox"]),
];

/// Hardware encoders: they need a GPU (or Apple's media engine) on the node.
pub fn is_gpu_encoder(encoder: &str) -> bool {
    ["_nvenc", "_qsv", "_vaapi", "_videotoolbox"].iter().any(|s| encoder.ends_with(s))
}

/// Every encoder a worker probes for.
pub const KNOWN_ENCODERS: &[&str] = &[
    "libx264",
    "libx265",
    "libvpx-vp9",
    "libsvtav1",
    "libaom-av1",
    "h264_nvenc",
    "hevc_nvenc",
    "av1_nvenc",
    "h264_qsv",
    "hevc_qsv",
    "av1_qsv",
    "h264_vaapi",
    "hevc_vaapi",
    "av1_vaapi",
    "h264_videotoolbox",
    "hevc_videotoolbox",
];

const PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "p1",
    "p2",
    "p3",
    "p4",
    "p5",
    "p6",
    "p7",
    "hq",
    "ll",
    "llhq",
    "hp",
    "default",
];

const KEYS: &[&str] = &[
    "codec",
    "hwaccel",
    "threads",
    "duration",
    "duration_seconds",
    "bitrate",
    "preset",
    "input",
    "output",
    "destination",
    "output_mode",
    "rtmp_url",
    "stream_key",
    "resolution",
    "fps",
    "resolution_width",
    "resolution_height",
    "frame_rate",
    "engine",
    "resource_limits",
    "gpu",
    "timeout_seconds",
    "qoe",
    "gpu_memory_mb",
    "realtime",
    "max_bitrate",
    "keyframe_seconds",
    "pix_fmt",
    "audio",
    "audio_bitrate",
    "audio_channels",
    "package",
    "packaging",
    "stage",
    "inputs",
    "thumbnails",
    "label",
    "weight",
    "template",
    "template_version",
    "subtitle_tracks",
    "chunking",
    "start_seconds",
    "crf",
    "probe_keyframes",
];

const LIMIT_KEYS: &[&str] = &["max_cpu_percent", "max_memory_mb", "max_disk_mb", "timeout_sec"];

/// Longest accepted synthetic or real input duration: one day.
pub const MAX_DURATION_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    File,
    Rtmp,
}

spelled_enum! {
/// Which media framework runs a job; spelled in lower case, written once.
#[derive(Default)]
pub enum Engine {
    #[default]
    Auto,
    Ffmpeg,
    Gstreamer,
}
}

impl Engine {
    /// An API value: empty means auto.
    pub fn parse(s: &str) -> Option<Engine> {
        if s.is_empty() { Some(Engine::Auto) } else { s.parse().ok() }
    }
}

/// A job's parameters after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Acceptable ffmpeg encoders, preferred first.
    pub encoders: &'static [&'static str],
    pub bitrate_kbps: Option<u32>,
    pub preset: Option<&'static str>,
    pub resolution: Option<(u32, u32)>,
    pub fps: Option<u32>,
    pub duration_seconds: Option<f64>,
    pub input: Option<String>,
    pub output: Option<String>,
    /// Where outputs are stored: the master's artifact store, or an S3 bucket.
    pub destination: super::media::Destination,
    pub output_mode: OutputMode,
    pub rtmp_url: Option<String>,
    pub stream_key: Option<String>,
    pub threads: Option<u32>,
    pub hwaccel: Option<&'static str>,
    pub gpu_index: Option<u32>,
    pub gpu_memory_mb: Option<u64>,
    pub timeout_seconds: Option<u64>,
    pub max_memory_mb: Option<u64>,
    /// Share of the node's CPUs the encode may use (1–100): enforced by pinning the
    /// encoder to that many cores and giving it as many threads.
    pub max_cpu_percent: Option<u32>,
    /// The output may grow to this many MiB; the encode is stopped beyond it.
    pub max_disk_mb: Option<u64>,
    pub qoe: bool,
    /// Read the input at its native rate (`-re`), as a live source would arrive.
    pub realtime: bool,
    pub engine: Engine,
    /// The synthetic input's picture and sound (a seed-style lavfi `input`, else the
    /// default test pattern and a 440 Hz tone); used only when `input` is None.
    pub pattern: VideoPattern,
    pub tone: AudioTone,
    /// Peak bitrate (VBV maximum) when it differs from `bitrate`.
    pub max_bitrate_kbps: Option<u32>,
    /// A keyframe exactly every this many seconds and nowhere else (no scene-cut
    /// keyframes): renditions of one ladder then cut into the same segments.
    pub keyframe_seconds: Option<f64>,
    /// yuv420p or yuv420p10le; None: 10-bit kept from a 10-bit source when the codec can.
    pub pix_fmt: Option<&'static str>,
    /// Which of the input's audio tracks are kept (default: all).
    pub audio: AudioSelect,
    pub audio_bitrate_kbps: Option<u32>,
    pub audio_channels: Option<u32>,
    /// A child of a package graph (set by the master, never by a client).
    pub stage: Option<super::ladder::Stage>,
    /// An ABR ladder / thumbnails package: the master expands the job into a graph.
    pub package: Option<super::ladder::PackageSpec>,
    /// The packaging step's format, segment length and audio tracks per audio input.
    pub packaging: Option<Packaging>,
    /// Further inputs (the packaging step reads its renditions: `artifact://` refs).
    pub inputs: Vec<String>,
    pub thumbnails: Option<super::ladder::Thumbnails>,
    /// The subtitle step's tracks (indices among the input's subtitle streams).
    pub subtitle_tracks: Vec<usize>,
    /// Split-and-stitch over many workers: the master expands the job into a graph.
    pub chunking: Option<super::chunking::ChunkingSpec>,
    /// Where in the input the encode starts (a chunk's window, or a job's own cut).
    pub start_seconds: Option<f64>,
    /// Constant quality (x264/x265 `-crf`, VP9/AV1 `-crf`, NVENC `-cq`).
    pub crf: Option<u32>,
    /// The probe step also lists the source's keyframe times (a chunked job's).
    pub probe_keyframes: bool,
}

/// A parameter problem, phrased for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, ParamError> {
    Err(ParamError(msg.into()))
}

pub(super) fn static_str(list: &'static [&'static str], v: &str) -> Option<&'static str> {
    list.iter().copied().find(|p| *p == v)
}

/// Parameters whose value is a number, even when a client writes it as text.
const NUMERIC_KEYS: &[&str] = &[
    "threads",
    "duration",
    "duration_seconds",
    "fps",
    "frame_rate",
    "resolution_width",
    "resolution_height",
    "gpu",
    "timeout_seconds",
    "gpu_memory_mb",
    "keyframe_seconds",
    "audio_channels",
    "weight",
    "start_seconds",
    "crf",
];

/// The parameters as stored: numbers written as text (`"fps": "30"`) become numbers, so
/// what is kept is the parsed value, never the submitted text. Run after
/// [`parse_job_spec`] accepted them.
pub fn normalize_parameters(mut params: Map<String, Value>) -> Map<String, Value> {
    let as_num = |v: &mut Value| {
        if let Value::String(s) = v
            && let Ok(n) = s.trim().parse::<f64>()
            && let Some(num) = serde_json::Number::from_f64(n)
        {
            *v = if n.fract() == 0.0 && n.abs() < 9e15 { Value::from(n as i64) } else { Value::Number(num) };
        }
    };
    for k in NUMERIC_KEYS {
        if let Some(v) = params.get_mut(*k) {
            as_num(v);
        }
    }
    if let Some(Value::Object(limits)) = params.get_mut("resource_limits") {
        limits.values_mut().for_each(as_num);
    }
    params
}

/// Bounds on the raw values: every text short and free of control characters (no
/// NUL ever reaches the database), the whole object small.
fn check_raw_values(params: &Map<String, Value>) -> Result<(), ParamError> {
    use super::limits::{PARAMETER_NUMBER_TEXT_MAX, PARAMETER_TEXT_MAX, PARAMETERS_JSON_MAX};
    // Keys no encode reads (seed clients' scenario data) are bounded by the whole
    // object's size only: the seed accepted a 10 KB value there.
    fn walk(key: &str, v: &Value, known: bool) -> Result<(), ParamError> {
        match v {
            Value::String(s) => {
                let max = match (known, NUMERIC_KEYS.contains(&key)) {
                    (false, _) => PARAMETERS_JSON_MAX,
                    (true, true) => PARAMETER_NUMBER_TEXT_MAX,
                    (true, false) => PARAMETER_TEXT_MAX,
                };
                if s.len() > max {
                    return err(format!("parameter '{key}' is longer than {max} characters"));
                }
                if s.chars().any(char::is_control) {
                    return err(format!("parameter '{key}' contains control characters"));
                }
                Ok(())
            }
            Value::Object(o) => o.iter().try_for_each(|(k, x)| walk(k, x, known)),
            Value::Array(a) => a.iter().try_for_each(|x| walk(key, x, known)),
            _ => Ok(()),
        }
    }
    params.iter().try_for_each(|(k, v)| walk(k, v, KEYS.contains(&k.as_str())))?;
    if serde_json::to_vec(params).map_or(usize::MAX, |b| b.len()) > PARAMETERS_JSON_MAX {
        return err(format!("parameters are larger than {PARAMETERS_JSON_MAX} bytes"));
    }
    Ok(())
}

/// The keys of `parameters` no encode reads, in order.
pub fn unknown_parameters(params: &Map<String, Value>) -> Vec<String> {
    params.keys().filter(|k| !KEYS.contains(&k.as_str())).cloned().collect()
}

/// The refusal of `--strict-parameters` for `unknown` keys.
pub fn unknown_parameters_error(unknown: &[String]) -> ParamError {
    ParamError(format!("unknown parameter '{}'; valid parameters: {}", unknown.join("', '"), KEYS.join(", ")))
}

/// Validate a job's `parameters` object and the job's engine.
///
/// Keys it does not know are left alone: they stay on the job (seed clients keep
/// scenario data there) and never reach an argv, which is built from the spec alone.
/// [`unknown_parameters`] names them; `--strict-parameters` refuses them.
pub fn parse_job_spec(params: &Map<String, Value>, engine: Engine) -> Result<JobSpec, ParamError> {
    check_raw_values(params)?;
    let text = |k: &str| -> Result<Option<String>, ParamError> {
        match params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_text(k, v).map(Some),
        }
    };
    let num = |k: &str, min: f64, max: f64| -> Result<Option<f64>, ParamError> {
        match params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => as_number(k, v, min, max).map(Some),
        }
    };

    if let Some(pe) = text("engine")? {
        match Engine::parse(&pe) {
            Some(p) if p == engine || p == Engine::Auto || engine == Engine::Auto => {}
            Some(_) => return err("parameter 'engine' disagrees with the job's engine"),
            None => return err(format!("invalid engine '{pe}'; valid values: {}", Engine::NAMES.join(", "))),
        }
    }
    let engine = match (engine, text("engine")?.as_deref().and_then(Engine::parse)) {
        (Engine::Auto, Some(p)) => p,
        (e, _) => e,
    };

    let codec = text("codec")?.unwrap_or_else(|| "h264".into()).to_ascii_lowercase();
    let encoders = match CODECS.iter().find(|(names, _)| names.contains(&codec.as_str())) {
        Some((_, encs)) => *encs,
        None => {
            let valid: Vec<&str> = CODECS.iter().flat_map(|(n, _)| n.iter().copied()).collect();
            return err(format!("unknown codec '{codec}'; valid values: {}", valid.join(", ")));
        }
    };

    let bitrate_kbps = match text("bitrate")? {
        None => None,
        Some(b) if b.is_empty() => None,
        Some(b) => Some(
            parse_bitrate_kbps(&b)
                .ok_or_else(|| ParamError(format!("invalid bitrate '{b}'; write e.g. 2500k or 5M (16k to 1000M)")))?,
        ),
    };
    let preset = match text("preset")? {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => Some(
            static_str(PRESETS, &p)
                .ok_or_else(|| ParamError(format!("invalid preset '{p}'; valid values: {}", PRESETS.join(", "))))?,
        ),
    };
    // A lavfi source in `input` (the seed's scripts send them) is a synthetic input,
    // parsed into checked values; anything else is a file path.
    let destination = match text("destination")? {
        Some(d) => super::media::Destination::parse(&d).map_err(ParamError)?,
        None => super::media::Destination::Artifact,
    };
    let mut input = text("input")?.filter(|s| !s.is_empty());
    let mut lavfi = LavfiSource::default();
    if let Some(i) = &input {
        match super::lavfi::parse_source(i) {
            Some(source) => {
                lavfi = source?;
                input = None;
            }
            // URLs are downloaded by the worker, never opened by ffmpeg; the master
            // checks their host against `--input-allow` at submission.
            None => {
                if let super::media::InputRef::Local(_) = super::media::InputRef::parse(i).map_err(ParamError)? {
                    check_input_path(i)?;
                }
            }
        }
    }
    let resolution = match text("resolution")? {
        Some(r) if !r.is_empty() => Some(parse_resolution(&r).ok_or_else(|| {
            ParamError(format!("invalid resolution '{r}'; write WxH with even sides up to 7680x4320, or 720p/1080p/4k"))
        })?),
        _ => match (num("resolution_width", 16.0, 7680.0)?, num("resolution_height", 16.0, 4320.0)?) {
            (Some(w), Some(h)) => Some((w as u32 & !1, h as u32 & !1)),
            (None, None) => None,
            _ => return err("give both resolution_width and resolution_height, or 'resolution'"),
        },
    }
    .or(lavfi.size);
    let fps = num("fps", 1.0, 240.0)?.or(num("frame_rate", 1.0, 240.0)?).map(|f| f.round() as u32).or(lavfi.rate);
    let duration_seconds = num("duration", 0.04, MAX_DURATION_SECONDS)?
        .or(num("duration_seconds", 0.04, MAX_DURATION_SECONDS)?)
        .or(lavfi.duration);
    let mut output = text("output")?.filter(|s| !s.is_empty());
    // An `rtmp://` output (the seed's scripts) is a stream to that URL.
    let output_url = output.take_if(|o| o.starts_with("rtmp://") || o.starts_with("rtmps://"));
    if let Some(o) = &output {
        check_output_name(o)?;
    }
    let output_mode = match (text("output_mode")?.as_deref(), &output_url) {
        (None | Some(""), Some(_)) => OutputMode::Rtmp,
        (None | Some("") | Some("file"), None) => OutputMode::File,
        (Some("file"), Some(_)) => return err("an rtmp:// output needs output_mode rtmp (or none)"),
        (Some("rtmp") | Some("stream"), _) => OutputMode::Rtmp,
        (Some(m), _) => return err(format!("invalid output_mode '{m}'; valid values: file, rtmp, stream")),
    };
    let rtmp_url = match (text("rtmp_url")?.filter(|s| !s.is_empty()), output_url) {
        (Some(a), Some(b)) if a != b => return err("parameters 'output' and 'rtmp_url' name different streams"),
        (explicit, from_output) => explicit.or(from_output),
    };
    if let Some(u) = &rtmp_url {
        check_rtmp_url(u)?;
    }
    let stream_key = text("stream_key")?.filter(|s| !s.is_empty());
    if let Some(k) = &stream_key
        && (k.len() > 128 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return err("parameter 'stream_key' may hold only letters, digits, '_' and '-' (at most 128)");
    }
    let threads = num("threads", 0.0, 512.0)?.map(|t| t as u32).filter(|t| *t > 0);
    let hwaccel =
        match text("hwaccel")?.as_deref() {
            None | Some("") | Some("none") => None,
            Some(h) => Some(static_str(&["auto", "cuda", "qsv", "vaapi"], h).ok_or_else(|| {
                ParamError(format!("invalid hwaccel '{h}'; valid values: none, auto, cuda, qsv, vaapi"))
            })?),
        };
    let gpu_index = num("gpu", 0.0, 15.0)?.map(|g| g as u32);
    let gpu_memory_mb = num("gpu_memory_mb", 0.0, 1_048_576.0)?.map(|g| g as u64);
    let mut timeout_seconds = num("timeout_seconds", 1.0, 604_800.0)?.map(|t| t as u64);
    let mut max_memory_mb = None;
    let (mut max_cpu_percent, mut max_disk_mb) = (None, None);
    if let Some(limits) = params.get("resource_limits") {
        let Value::Object(limits) = limits else {
            return err("parameter 'resource_limits' must be an object");
        };
        for (k, v) in limits {
            if !LIMIT_KEYS.contains(&k.as_str()) {
                return err(format!("unknown resource limit '{k}'; valid: {}", LIMIT_KEYS.join(", ")));
            }
            let max = if k == "timeout_sec" { 604_800.0 } else { 1_048_576.0 };
            let n = as_number(k, v, 0.0, max)?;
            match k.as_str() {
                "timeout_sec" if n > 0.0 => timeout_seconds = timeout_seconds.or(Some(n as u64)),
                "max_memory_mb" if n > 0.0 => max_memory_mb = Some(n as u64),
                "max_cpu_percent" if n > 100.0 => {
                    return err("resource limit 'max_cpu_percent' must be between 1 and 100");
                }
                "max_cpu_percent" if n > 0.0 => max_cpu_percent = Some(n.ceil() as u32),
                "max_disk_mb" if n > 0.0 => max_disk_mb = Some(n.ceil() as u64),
                _ => {}
            }
        }
    }
    let qoe = match params.get("qoe") {
        None | Some(Value::Null) => false,
        Some(v) => as_bool("qoe", v)?,
    };
    let realtime = match params.get("realtime") {
        None | Some(Value::Null) => false,
        Some(v) => as_bool("realtime", v)?,
    };
    if engine == Engine::Gstreamer {
        // The GStreamer pipeline is a test-pattern H.264 encode to MP4 or RTMP: refuse
        // what it would silently ignore instead of "completing" something else.
        let refuse =
            |what: &str| err(format!("engine 'gstreamer' cannot honour {what}; use engine 'ffmpeg' (or 'auto')"));
        if input.is_some() {
            return refuse("an input file (it encodes a test pattern)");
        }
        if lavfi.video != VideoPattern::default() || lavfi.audio != AudioTone::default() {
            return refuse("that lavfi source (it encodes its own test pattern)");
        }
        if encoders != ["libx264"] {
            return refuse(&format!("codec '{codec}' (it encodes H.264 with x264enc)"));
        }
        if output.as_deref().is_some_and(|o| !o.ends_with(".mp4")) {
            return refuse("that output container (it writes MP4)");
        }
        if preset.is_some() || hwaccel.is_some() || gpu_index.is_some() || threads.is_some() {
            return refuse("preset, hwaccel, gpu or threads");
        }
        if params.get("qoe").is_some_and(|q| q.as_bool() == Some(true)) {
            return refuse("qoe (its pattern is not the reference ffmpeg compares with)");
        }
    }
    let graph = graph_fields(params, &text, &num)?;
    if graph.package.is_some() && input.is_none() {
        return err("a package needs an input file or URL (the ladder is planned from the probed source)");
    }
    if graph.start_seconds.is_some() && input.is_none() {
        return err("parameter 'start_seconds' cuts an input file; a synthetic source has none");
    }
    if graph.chunking.is_some() {
        super::chunking::check_chunkable(
            input.is_some(),
            output_mode == OutputMode::Rtmp || realtime,
            output.as_deref(),
        )
        .map_err(ParamError)?;
    }
    Ok(JobSpec {
        max_bitrate_kbps: graph.max_bitrate_kbps,
        keyframe_seconds: graph.keyframe_seconds,
        pix_fmt: graph.pix_fmt,
        audio: graph.audio,
        audio_bitrate_kbps: graph.audio_bitrate_kbps,
        audio_channels: graph.audio_channels,
        stage: graph.stage,
        package: graph.package,
        packaging: graph.packaging,
        inputs: graph.inputs,
        thumbnails: graph.thumbnails,
        subtitle_tracks: graph.subtitle_tracks,
        chunking: graph.chunking,
        start_seconds: graph.start_seconds,
        crf: graph.crf,
        probe_keyframes: graph.probe_keyframes,
        encoders,
        bitrate_kbps,
        preset,
        resolution,
        fps,
        duration_seconds,
        input,
        destination,
        output,
        output_mode,
        rtmp_url,
        stream_key,
        threads,
        hwaccel,
        gpu_index,
        gpu_memory_mb,
        timeout_seconds,
        max_memory_mb,
        max_cpu_percent,
        max_disk_mb,
        qoe,
        realtime,
        engine,
        pattern: lavfi.video,
        tone: lavfi.audio,
    })
}

/// Wall-clock limit of one attempt: the job's own, else 3 × duration + 60 s, else 6 h.
/// The worker enforces it; the master's JobActor adds a grace period on top.
pub fn attempt_timeout(spec: Option<&JobSpec>) -> std::time::Duration {
    use std::time::Duration;
    match spec {
        Some(JobSpec { timeout_seconds: Some(t), .. }) => Duration::from_secs(*t),
        Some(JobSpec { duration_seconds: Some(d), .. }) => Duration::from_secs_f64(d * 3.0 + 60.0),
        _ => Duration::from_secs(6 * 3600),
    }
}

impl JobSpec {
    /// Cores the encode may use on a node with `cpus` of them (`max_cpu_percent`).
    pub fn cpu_cap(&self, cpus: usize) -> Option<usize> {
        let pct = self.max_cpu_percent?;
        Some(((cpus as u64 * pct as u64).div_ceil(100) as usize).clamp(1, cpus.max(1)))
    }

    /// The encoder needs a GPU (NVENC, QSV, VAAPI, VideoToolbox), or hardware decoding
    /// was asked for.
    pub fn needs_gpu(&self) -> bool {
        self.hwaccel.is_some() || self.gpu_index.is_some() || self.encoders.iter().any(|e| is_gpu_encoder(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<JobSpec, ParamError> {
        parse_job_spec(v.as_object().unwrap(), Engine::Auto)
    }

    #[test]
    fn gstreamer_refuses_what_its_pipeline_ignores() {
        let gst = |v: Value| parse_job_spec(v.as_object().unwrap(), Engine::Gstreamer);
        assert!(gst(json!({"resolution": "640x360", "fps": 25, "bitrate": "1M", "duration": 2})).is_ok());
        assert!(gst(json!({"output_mode": "rtmp"})).is_ok());
        for bad in [
            json!({"input": "a.mp4"}),
            json!({"codec": "vp9"}),
            json!({"output": "x.webm"}),
            json!({"preset": "slow"}),
            json!({"qoe": true}),
        ] {
            let e = gst(bad.clone()).unwrap_err();
            assert!(e.0.contains("gstreamer"), "{bad}: {e}");
        }
    }

    #[test]
    fn resource_limits_are_parsed_and_bounded() {
        let s = spec(json!({"resource_limits": {"max_cpu_percent": 50, "max_disk_mb": "200", "max_memory_mb": 0}}))
            .unwrap();
        assert_eq!((s.max_cpu_percent, s.max_disk_mb, s.max_memory_mb), (Some(50), Some(200), None));
        assert_eq!(s.cpu_cap(8), Some(4));
        assert_eq!(s.cpu_cap(2), Some(1));
        assert_eq!(spec(json!({"resource_limits": {"max_cpu_percent": 1}})).unwrap().cpu_cap(8), Some(1));
        assert_eq!(spec(json!({})).unwrap().cpu_cap(8), None);
        assert!(spec(json!({"resource_limits": {"max_cpu_percent": 150}})).is_err());
    }

    #[test]
    fn defaults_are_h264_file() {
        let s = spec(json!({})).unwrap();
        assert_eq!(s.encoders, &["libx264"]);
        assert_eq!(s.output_mode, OutputMode::File);
        assert!(!s.needs_gpu());
    }

    #[test]
    fn seed_style_parameters_are_accepted() {
        let s = spec(json!({"codec":"h264","duration":"10","bitrate":"5000k","resolution":"1280x720",
            "fps":30,"preset":"veryfast","engine":"ffmpeg","output_mode":"rtmp","rtmp_url":"rtmp://h:1935/live/x"}))
        .unwrap();
        assert_eq!(s.bitrate_kbps, Some(5000));
        assert_eq!(s.resolution, Some((1280, 720)));
        assert_eq!(s.duration_seconds, Some(10.0));
        assert_eq!(s.engine, Engine::Ffmpeg);
        assert_eq!(s.output_mode, OutputMode::Rtmp);
    }

    #[test]
    fn hostile_parameters_are_refused() {
        let cases = [
            json!({"input": "ftp://evil/x.mp4"}),
            json!({"input": "file:///etc/passwd"}),
            json!({"input": "http://user:pw@evil/x.mp4"}),
            json!({"input": "concat:a|b"}),
            json!({"input": "file:/etc/passwd"}),
            json!({"input": "../../etc/passwd"}),
            json!({"input": "-f lavfi"}),
            json!({"input": "a\nb"}),
            json!({"input": "x.mp4; touch /tmp/p"}),
            json!({"input": "$(id).mp4"}),
            json!({"rtmp_url": "rtmp://x/$(id)"}),
            json!({"output": "../x.mp4"}),
            json!({"output": "/tmp/x.mp4"}),
            json!({"output": "-y.mp4"}),
            json!({"output": "x.mp4; rm -rf /"}),
            json!({"output": "out.sh"}),
            json!({"codec": "libx264 -vf"}),
            json!({"codec": "$(reboot)"}),
            json!({"bitrate": "5000k; ls"}),
            json!({"preset": "fast -f"}),
            json!({"resolution": "100000x100000"}),
            json!({"duration": 1e12}),
            json!({"duration": -1}),
            json!({"threads": 100000}),
            json!({"rtmp_url": "http://x"}),
            json!({"rtmp_url": "rtmp://x y"}),
            json!({"stream_key": "a/../b"}),
            json!({"hwaccel": "cuda -i x"}),
            json!({"resource_limits": {"timeout_sec": "x"}}),
        ];
        for c in cases {
            assert!(spec(c.clone()).is_err(), "must refuse {c}");
        }
    }

    #[test]
    fn unknown_parameters_are_kept_out_of_the_spec() {
        let p = json!({"codec": "h264", "filter": "-vf drawtext=text=x", "customer": {"id": 7}});
        let p = p.as_object().unwrap();
        assert_eq!(unknown_parameters(p), ["customer", "filter"]);
        let s = parse_job_spec(p, Engine::Auto).unwrap();
        assert_eq!(s, parse_job_spec(json!({"codec": "h264"}).as_object().unwrap(), Engine::Auto).unwrap());
        assert!(unknown_parameters_error(&unknown_parameters(p)).0.contains("unknown parameter 'customer', 'filter'"));
        // Scenario data may be large (the seed accepted 10 KB); the object stays bounded.
        assert!(spec(json!({"notes": "x".repeat(10_000)})).is_ok());
        assert!(spec(json!({"input": "x".repeat(10_000)})).is_err(), "known keys keep their own bound");
        assert!(spec(json!({"notes": "x".repeat(20_000)})).is_err());
        assert!(spec(json!({"notes": "a\u{0}b"})).is_err(), "no control characters anywhere");
    }

    #[test]
    fn bitrates_and_resolutions() {
        assert_eq!(parse_bitrate_kbps("2500k"), Some(2500));
        assert_eq!(parse_bitrate_kbps("5M"), Some(5000));
        assert_eq!(parse_bitrate_kbps("800000"), Some(800));
        assert_eq!(parse_bitrate_kbps("abc"), None);
        assert_eq!(parse_resolution("720p"), Some((1280, 720)));
        assert_eq!(parse_resolution("161x90"), None);
    }

    #[test]
    fn gpu_codecs_need_a_gpu() {
        assert!(spec(json!({"codec":"h264_nvenc"})).unwrap().needs_gpu());
        assert!(spec(json!({"hwaccel":"cuda"})).unwrap().needs_gpu());
        // The seed treated an empty hwaccel as a GPU request (bug B7); we do not.
        assert!(!spec(json!({"hwaccel":""})).unwrap().needs_gpu());
        assert!(!spec(json!({"hwaccel":"none"})).unwrap().needs_gpu());
    }

    #[test]
    fn engine_is_validated() {
        let vlc = json!({"engine": "vlc"});
        assert!(
            parse_job_spec(vlc.as_object().unwrap(), Engine::Auto).unwrap_err().0.contains("auto, ffmpeg, gstreamer")
        );
    }
}
