//! The argv of an encode, built as data from a validated [`JobSpec`]. Never a shell:
//! every value below came through the allow-list in `params`.

use super::params::JobSpec;
use std::path::{Path, PathBuf};

/// Where the input comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// `testsrc2` video + `sine` audio of the job's size, rate and duration.
    Synthetic,
    File(PathBuf),
}

/// Where the output goes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputTarget {
    File(PathBuf),
    Rtmp(String),
    /// A directory of files (a streaming package, thumbnails): every file is an output,
    /// named by its path inside.
    Dir(PathBuf),
}

pub const DEFAULT_RESOLUTION: (u32, u32) = (1280, 720);
pub const DEFAULT_FPS: u32 = 30;
pub const DEFAULT_DURATION: f64 = 10.0;

/// Demuxers a job's file input may be opened with: containers and elementary streams
/// only. Playlist and list demuxers (hls, dash, concat, image2 sequences, …) would let
/// a file under an input root name other files — anywhere — as its segments, so a
/// `.m3u8` (even renamed `.mp4`) fails to open instead of being transcoded.
pub const INPUT_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,mxf,ogg,wav,mp3,aac,\
h264,hevc,ivf,nut,asf,yuv4mpegpipe,dv,gif";

/// `-i FILE` with the input restrictions: only the plain `file` protocol and the
/// container demuxers of [`INPUT_FORMATS`].
pub fn file_input_args(path: &Path) -> Vec<String> {
    ["-protocol_whitelist", "file", "-format_whitelist", INPUT_FORMATS, "-i"]
        .iter()
        .map(|s| s.to_string())
        .chain([path.to_string_lossy().into_owned()])
        .collect()
}

/// The output file name when the job does not give one.
pub fn default_output_name(encoder: &str) -> &'static str {
    if encoder == "libvpx-vp9" { "output.webm" } else { "output.mp4" }
}

/// Where an RTMP job streams: its `rtmp_url` (+ `stream_key`), else `base/<key or job id>`.
pub fn rtmp_target(spec: &JobSpec, base: &str, job_id: &str) -> String {
    let key = spec.stream_key.clone().unwrap_or_else(|| job_id.to_string());
    match &spec.rtmp_url {
        Some(u) if spec.stream_key.is_some() => format!("{}/{}", u.trim_end_matches('/'), key),
        Some(u) => u.clone(),
        None => format!("{}/{}", base.trim_end_matches('/'), key),
    }
}

fn preset_args(encoder: &str, preset: Option<&str>) -> Vec<String> {
    let Some(p) = preset else {
        return match encoder {
            "libx264" | "libx265" => vec!["-preset".into(), "veryfast".into()],
            "libvpx-vp9" => vec!["-deadline".into(), "realtime".into(), "-cpu-used".into(), "8".into()],
            "libsvtav1" => vec!["-preset".into(), "10".into()],
            "libaom-av1" => vec!["-cpu-used".into(), "8".into()],
            _ => vec![],
        };
    };
    let speed_rank = |p: &str| -> u32 {
        match p {
            "ultrafast" | "p1" | "hp" | "ll" => 9,
            "superfast" | "p2" => 8,
            "veryfast" | "p3" => 7,
            "faster" => 6,
            "fast" | "p4" | "llhq" => 5,
            "medium" | "default" => 4,
            "slow" | "p5" | "hq" => 3,
            "slower" | "p6" => 2,
            _ => 1,
        }
    };
    let r = speed_rank(p);
    match encoder {
        "libx264" | "libx265" => {
            let name = if p.starts_with('p') || matches!(p, "hq" | "ll" | "llhq" | "hp" | "default") {
                ["veryslow", "slower", "slow", "medium", "fast", "faster", "veryfast", "superfast", "ultrafast"]
                    [(r - 1) as usize]
            } else {
                p
            };
            vec!["-preset".into(), name.into()]
        }
        e if e.ends_with("_nvenc") => {
            let name = if p.starts_with('p') && p.len() == 2 {
                p.to_string()
            } else {
                format!("p{}", (8u32.saturating_sub(r)).clamp(1, 7))
            };
            vec!["-preset".into(), name]
        }
        "libvpx-vp9" => {
            let deadline = if r >= 7 { "realtime" } else { "good" };
            vec!["-deadline".into(), deadline.into(), "-cpu-used".into(), r.min(8).to_string()]
        }
        "libsvtav1" => vec!["-preset".into(), (r + 3).min(13).to_string()],
        "libaom-av1" => vec!["-cpu-used".into(), r.min(8).to_string()],
        _ => vec![],
    }
}

/// The full ffmpeg argv (without the program name). `encoder` is the one chosen from
/// `spec.encoders` for this node; progress goes to stdout (`-progress pipe:1`).
/// The lavfi graph of the synthetic picture, written from checked values only.
pub fn synthetic_video(spec: &JobSpec) -> String {
    use super::params::VideoPattern;
    let (w, h) = spec.resolution.unwrap_or(DEFAULT_RESOLUTION);
    let fps = spec.fps.unwrap_or(DEFAULT_FPS);
    let d = spec.duration_seconds.unwrap_or(DEFAULT_DURATION);
    let source = match &spec.pattern {
        VideoPattern::Testsrc => "testsrc".to_string(),
        VideoPattern::Testsrc2 => "testsrc2".to_string(),
        VideoPattern::Smptebars => "smptebars".to_string(),
        VideoPattern::Smptehdbars => "smptehdbars".to_string(),
        VideoPattern::Color(c) => format!("color=c={c}:"),
    };
    let sep = if source.ends_with(':') { "" } else { "=" };
    format!("{source}{sep}size={w}x{h}:rate={fps}:duration={d}")
}

/// The lavfi graph of the synthetic sound (48 kHz).
pub fn synthetic_audio(spec: &JobSpec) -> String {
    use super::params::AudioTone;
    let d = spec.duration_seconds.unwrap_or(DEFAULT_DURATION);
    match spec.tone {
        AudioTone::Sine { frequency } => format!("sine=frequency={frequency}:sample_rate=48000:duration={d}"),
        // aevalsrc, unlike anullsrc, ends with the picture.
        AudioTone::Silence => format!("aevalsrc=0:sample_rate=48000:duration={d}"),
    }
}

pub fn ffmpeg_argv(spec: &JobSpec, encoder: &str, input: &InputSource, output: &OutputTarget) -> Vec<String> {
    ffmpeg_argv_for(spec, encoder, input, output, false)
}

/// The encode's arguments for the shared prefix of every ffmpeg run. Info-level
/// messages tagged with their level: operators follow them live (`job.log` events),
/// and the failure classifier reads only the error-level ones.
pub fn common_prefix() -> Vec<String> {
    ["-hide_banner", "-nostdin", "-loglevel", "level+info", "-nostats", "-progress", "pipe:1", "-stats_period", "0.5"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Keyframes exactly every `seconds` (at `fps`) and nowhere else: the same cut points
/// in every rendition of a ladder.
fn fixed_keyframes(encoder: &str, seconds: f64, fps: Option<u32>) -> Vec<String> {
    let gop = ((seconds * f64::from(fps.unwrap_or(DEFAULT_FPS))).round() as u32).max(1);
    let mut a = vec![
        "-g".to_string(),
        gop.to_string(),
        "-keyint_min".into(),
        gop.to_string(),
        "-sc_threshold".into(),
        "0".into(),
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{seconds})"),
    ];
    if encoder == "libx265" {
        a.extend(["-x265-params".into(), format!("keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0")]);
    }
    a
}

/// Constant quality for `encoder` (a `bitrate` alongside it caps the peak, as with
/// x264's capped CRF).
fn crf_args(encoder: &str, q: u32) -> Vec<String> {
    match encoder {
        e if e.ends_with("_nvenc") => vec!["-rc".into(), "vbr".into(), "-cq".into(), q.min(51).to_string()],
        e if e.ends_with("_qsv") => vec!["-global_quality".into(), q.min(51).to_string()],
        e if e.ends_with("_vaapi") => vec!["-qp".into(), q.min(51).to_string()],
        "libx264" | "libx265" => vec!["-crf".into(), q.min(51).to_string()],
        _ => vec!["-crf".into(), q.to_string()],
    }
}

/// [`ffmpeg_argv`] knowing whether the source is more than 8 bits deep (kept when the
/// encoder can carry it and the job names no pixel format).
pub fn ffmpeg_argv_for(
    spec: &JobSpec,
    encoder: &str,
    input: &InputSource,
    output: &OutputTarget,
    source_high_depth: bool,
) -> Vec<String> {
    use super::params::AudioSelect;
    let mut a = common_prefix();
    let live = matches!(output, OutputTarget::Rtmp(_)) || spec.realtime;
    let duration = spec.duration_seconds;
    if let Some(h) = spec.hwaccel {
        a.extend(["-hwaccel".into(), h.to_string()]);
    }
    match input {
        InputSource::Synthetic => {
            if live {
                a.push("-re".into());
            }
            a.extend(["-f".into(), "lavfi".into(), "-i".into(), synthetic_video(spec)]);
            if live {
                a.push("-re".into());
            }
            a.extend(["-f".into(), "lavfi".into(), "-i".into(), synthetic_audio(spec)]);
        }
        InputSource::File(p) => {
            if live {
                a.push("-re".into());
            }
            if let Some(s) = spec.start_seconds {
                // Just before the first frame wanted: ffmpeg's accurate seek keeps it first.
                let at = (s - super::chunking::SEEK_EPSILON).max(0.0);
                a.extend(["-ss".into(), format!("{at:.6}")]);
            }
            a.extend(file_input_args(p));
        }
    }
    let audio_only = spec.stage == Some(super::ladder::Stage::Audio);
    if !audio_only {
        a.extend(["-map".into(), "0:v:0".into()]);
    }
    let audio_map = match (input, spec.audio) {
        (_, AudioSelect::None) => None,
        (InputSource::Synthetic, _) => Some("1:a:0"),
        (InputSource::File(_), AudioSelect::First) => Some("0:a:0?"),
        (InputSource::File(_), AudioSelect::All) => Some("0:a?"),
    };
    if let Some(m) = audio_map {
        a.extend(["-map".into(), m.into()]);
    }
    if audio_only {
        a.push("-vn".into());
        let webm = matches!(output, OutputTarget::File(p) if p.extension().is_some_and(|e| e == "webm"));
        a.extend(["-c:a".into(), if webm { "libopus" } else { "aac" }.into()]);
        a.extend(["-b:a".into(), format!("{}k", spec.audio_bitrate_kbps.unwrap_or(128))]);
        if let Some(c) = spec.audio_channels {
            a.extend(["-ac".into(), c.to_string()]);
        }
        if let OutputTarget::File(p) = output {
            a.extend(["-y".into(), p.to_string_lossy().into_owned()]);
        }
        return a;
    }
    a.extend(["-c:v".into(), encoder.to_string()]);
    a.extend(preset_args(encoder, spec.preset));
    if let Some(q) = spec.crf {
        a.extend(crf_args(encoder, q));
    }
    match (spec.bitrate_kbps, spec.crf) {
        (Some(k), crf) => {
            let peak = spec.max_bitrate_kbps.unwrap_or(k).max(k);
            // With a quality target the bitrate is the cap (capped CRF), not the average.
            if crf.is_none() {
                a.extend(["-b:v".into(), format!("{k}k")]);
            }
            a.extend(["-maxrate".into(), format!("{peak}k"), "-bufsize".into(), format!("{}k", peak * 2)]);
        }
        // VP9 is in constant-quality mode only with a zero target bitrate.
        (None, Some(_)) if encoder == "libvpx-vp9" => a.extend(["-b:v".into(), "0".into()]),
        _ => {}
    }
    if let Some(sec) = spec.keyframe_seconds {
        a.extend(fixed_keyframes(encoder, sec, spec.fps));
    }
    if let (Some((w, h)), InputSource::File(_)) = (spec.resolution, input) {
        a.extend(["-vf".into(), format!("scale={w}:{h}")]);
    }
    if let (Some(f), InputSource::File(_)) = (spec.fps, input) {
        a.extend(["-r".into(), f.to_string()]);
    }
    if let Some(t) = spec.threads {
        a.extend(["-threads".into(), t.to_string()]);
    }
    if let Some(g) = spec.gpu_index.filter(|_| encoder.ends_with("_nvenc")) {
        a.extend(["-gpu".into(), g.to_string()]);
    }
    if !encoder.ends_with("_vaapi") && !encoder.ends_with("_qsv") {
        let codec = if encoder.contains("265") || encoder.starts_with("hevc") {
            "hevc"
        } else if encoder.contains("av1") {
            "av1"
        } else if encoder.contains("vp9") {
            "vp9"
        } else {
            "h264"
        };
        let pix = spec.pix_fmt.unwrap_or(super::ladder::output_pix_fmt(codec, source_high_depth));
        // NVENC takes 10-bit as p010.
        let pix = if pix == "yuv420p10le" && encoder.ends_with("_nvenc") { "p010le" } else { pix };
        a.extend(["-pix_fmt".into(), pix.into()]);
    }
    let webm = matches!(output, OutputTarget::File(p) if p.extension().is_some_and(|e| e == "webm"));
    if audio_map.is_some() {
        let rate = format!("{}k", spec.audio_bitrate_kbps.unwrap_or(128));
        a.extend(["-c:a".into(), if webm { "libopus" } else { "aac" }.into(), "-b:a".into(), rate]);
    } else {
        a.push("-an".into());
    }
    if let (Some(d), InputSource::File(_)) = (duration, input) {
        a.extend(["-t".into(), d.to_string()]);
    }
    a.push("-shortest".into());
    match output {
        OutputTarget::File(p) => {
            a.push("-y".into());
            a.push(p.to_string_lossy().into_owned());
        }
        OutputTarget::Rtmp(u) => {
            a.extend(["-f".into(), "flv".into(), u.clone()]);
        }
        // Packages and thumbnails are written by their own steps' arguments.
        OutputTarget::Dir(_) => {}
    }
    a
}

/// A `gst-launch-1.0` argv for the synthetic source (the GStreamer engine covers the
/// live/test-pattern case; file inputs go through ffmpeg).
pub fn gstreamer_argv(spec: &JobSpec, output: &OutputTarget) -> Vec<String> {
    let (w, h) = spec.resolution.unwrap_or(DEFAULT_RESOLUTION);
    let fps = spec.fps.unwrap_or(DEFAULT_FPS);
    let frames = (spec.duration_seconds.unwrap_or(DEFAULT_DURATION) * fps as f64).round().max(1.0) as u64;
    let kbps = spec.bitrate_kbps.unwrap_or(2000);
    let mut a: Vec<String> = vec!["-q".into(), "-e".into(), "videotestsrc".into(), format!("num-buffers={frames}")];
    if matches!(output, OutputTarget::Rtmp(_)) {
        a.push("is-live=true".into());
    }
    a.extend([
        "!".into(),
        format!("video/x-raw,width={w},height={h},framerate={fps}/1"),
        "!".into(),
        "videoconvert".into(),
        "!".into(),
    ]);
    a.extend([
        "x264enc".into(),
        format!("bitrate={kbps}"),
        "speed-preset=veryfast".into(),
        "tune=zerolatency".into(),
        "!".into(),
    ]);
    match output {
        OutputTarget::File(p) | OutputTarget::Dir(p) => {
            a.extend(["mp4mux".into(), "!".into(), "filesink".into(), format!("location={}", p.display())])
        }
        OutputTarget::Rtmp(u) => a.extend([
            "flvmux".into(),
            "streamable=true".into(),
            "!".into(),
            "rtmpsink".into(),
            format!("location={u}"),
        ]),
    }
    a
}

/// Resolve a job's input path against the allowed roots: it must exist and, after
/// following links, lie inside one of them.
pub fn resolve_input(path: &str, roots: &[PathBuf]) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let candidates: Vec<PathBuf> =
        if p.is_absolute() { vec![p.to_path_buf()] } else { roots.iter().map(|r| r.join(p)).collect() };
    for c in candidates {
        let Ok(real) = c.canonicalize() else { continue };
        for r in roots {
            if let Ok(root) = r.canonicalize()
                && real.starts_with(&root)
                && real.is_file()
            {
                return Ok(real);
            }
        }
    }
    Err(format!("input '{path}' is not a file under the worker's input roots"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::params::parse_job_spec;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> JobSpec {
        parse_job_spec(v.as_object().unwrap(), crate::domain::params::Engine::Auto).unwrap()
    }

    #[test]
    fn synthetic_h264_file() {
        let s = spec(
            json!({"codec": "h264", "resolution": "160x90", "fps": 15, "duration": 2, "bitrate": "500k", "preset": "ultrafast"}),
        );
        let a = ffmpeg_argv(&s, "libx264", &InputSource::Synthetic, &OutputTarget::File("/w/out.mp4".into()));
        let joined = a.join(" ");
        assert!(joined.contains("-f lavfi -i testsrc2=size=160x90:rate=15:duration=2"), "{joined}");
        // A seed-style lavfi input: its own values, in a graph the argv writes itself.
        let seed = spec(json!({"input": "smptebars=size=320x240:rate=25:duration=3"}));
        let bars =
            ffmpeg_argv(&seed, "libx264", &InputSource::Synthetic, &OutputTarget::File("o.mp4".into())).join(" ");
        assert!(bars.contains("-i smptebars=size=320x240:rate=25:duration=3 "), "{bars}");
        let red = spec(json!({"input": "color=c=red", "duration": 1}));
        assert_eq!(synthetic_video(&red), "color=c=red:size=1280x720:rate=30:duration=1");
        let quiet = spec(json!({"input": "anullsrc", "duration": 1}));
        assert_eq!(synthetic_audio(&quiet), "aevalsrc=0:sample_rate=48000:duration=1");
        assert!(joined.contains("-c:v libx264 -preset ultrafast -b:v 500k"));
        assert!(joined.contains("-progress pipe:1"));
        assert!(joined.starts_with("-hide_banner -nostdin"));
        assert_eq!(a.last().unwrap(), "/w/out.mp4");
        assert!(!joined.contains("-re"));
    }

    #[test]
    fn a_chunk_seeks_just_before_its_first_frame_and_keeps_its_length() {
        let s = spec(json!({"input": "in.mp4", "start_seconds": 4, "duration": 6, "crf": 23, "audio": "none"}));
        let file = InputSource::File("/w/in.mp4".into());
        let a = ffmpeg_argv(&s, "libx264", &file, &OutputTarget::File("/w/c.mp4".into())).join(" ");
        assert!(a.contains("-ss 3.999000 -protocol_whitelist file"), "{a}");
        assert!(a.contains("-crf 23") && !a.contains("-b:v"), "{a}");
        assert!(a.contains("-an -t 6 "), "{a}");
        // Capped CRF: the bitrate is the VBV peak; VP9 needs a zero target for CRF.
        let capped = spec(json!({"input": "in.mp4", "crf": 20, "bitrate": "2M"}));
        let a = ffmpeg_argv(&capped, "libx264", &file, &OutputTarget::File("o.mp4".into())).join(" ");
        assert!(a.contains("-crf 20 -maxrate 2000k -bufsize 4000k") && !a.contains("-b:v"), "{a}");
        let vp9 = spec(json!({"input": "in.mp4", "codec": "vp9", "crf": 33}));
        let a = ffmpeg_argv(&vp9, "libvpx-vp9", &file, &OutputTarget::File("o.webm".into())).join(" ");
        assert!(a.contains("-crf 33 -b:v 0"), "{a}");
        let nv = ffmpeg_argv(
            &spec(json!({"input": "in.mp4", "crf": 25})),
            "h264_nvenc",
            &file,
            &OutputTarget::File("o.mp4".into()),
        );
        assert!(nv.join(" ").contains("-rc vbr -cq 25"));
    }

    #[test]
    fn vp9_uses_webm_audio_and_vp9_speed() {
        let s = spec(json!({"codec": "vp9"}));
        let a = ffmpeg_argv(&s, "libvpx-vp9", &InputSource::Synthetic, &OutputTarget::File("o.webm".into())).join(" ");
        assert!(a.contains("-c:a libopus") && a.contains("-deadline realtime"), "{a}");
    }

    #[test]
    fn rtmp_is_realtime_flv() {
        let s = spec(json!({"output_mode": "rtmp", "rtmp_url": "rtmp://h/live", "stream_key": "k1"}));
        let url = rtmp_target(&s, "rtmp://base:1935/live", "job");
        assert_eq!(url, "rtmp://h/live/k1");
        let a = ffmpeg_argv(&s, "libx264", &InputSource::Synthetic, &OutputTarget::Rtmp(url)).join(" ");
        assert!(a.contains("-re -f lavfi") && a.ends_with("-f flv rtmp://h/live/k1"), "{a}");
        let s2 = spec(json!({"output_mode": "rtmp"}));
        assert_eq!(rtmp_target(&s2, "rtmp://base:1935/live/", "j1"), "rtmp://base:1935/live/j1");
    }

    #[test]
    fn presets_map_per_encoder() {
        assert_eq!(preset_args("h264_nvenc", Some("fast")), vec!["-preset", "p3"]);
        assert_eq!(preset_args("libx264", Some("p7")), vec!["-preset", "veryslow"]);
        assert_eq!(preset_args("libsvtav1", Some("ultrafast")), vec!["-preset", "12"]);
    }

    #[test]
    fn inputs_stay_inside_roots() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.mp4"), b"x").unwrap();
        let roots = vec![root.path().to_path_buf()];
        assert!(resolve_input("a.mp4", &roots).is_ok());
        assert!(resolve_input(root.path().join("a.mp4").to_str().unwrap(), &roots).is_ok());
        assert!(resolve_input("/etc/passwd", &roots).is_err());
        assert!(resolve_input("missing.mp4", &roots).is_err());
        assert!(resolve_input("a.mp4", &[]).is_err());
    }
}
