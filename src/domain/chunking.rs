//! Chunked (split-and-stitch) encoding, pure: the `chunking` parameter, where a probed
//! source is cut (on its own keyframes when one is near, else at an exact frame time
//! that the chunk's encode trims to), and the children of a chunked job: one encode
//! per chunk, the audio encoded once over the whole duration, and a stitch that
//! concatenates the chunks without re-encoding and muxes the audio. A ladder's
//! renditions are chunked the same way on segment-aligned boundaries.
//!
//! A chunk's encode opens the source with an input seek to just before its first
//! frame (`-ss start-ε`, which ffmpeg makes frame-accurate by decoding from the
//! keyframe before and dropping what precedes) and keeps `end-start` seconds, so the
//! chunks hold every source frame exactly once.

use super::ladder::{PlannedChild, Stage};
use super::media::InputInfo;
use serde_json::{Map, Value, json};

/// Most chunks one encode is cut into (longer chunks beyond that), and most chunk
/// children of one ladder: a stitch's `inputs` stay within the parameters' bounds.
pub const MAX_CHUNKS: usize = 200;
/// Most keyframe times a probe reports (evenly thinned beyond that).
pub const MAX_KEYFRAMES: usize = 2000;
/// How far before a chunk's first frame its input seek lands: less than half of any
/// frame interval, so the frame at `start` is the first one kept and no rounding of
/// the output timestamps duplicates or drops one.
pub const SEEK_EPSILON: f64 = 0.001;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkMode {
    /// Always chunk.
    Fixed,
    /// Chunk only a source longer than `min_duration_seconds`, and only when more than
    /// one worker could take chunks.
    Auto,
}

/// The validated `chunking` parameter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkingSpec {
    pub mode: ChunkMode,
    pub chunk_seconds: f64,
    pub min_duration_seconds: f64,
}

pub const DEFAULT_CHUNK_SECONDS: f64 = 30.0;

impl ChunkingSpec {
    /// `true`, `"auto"`, `{enabled: true|false|"auto", chunk_seconds, min_duration_seconds}`;
    /// None when chunking is off.
    pub fn parse(v: &Value) -> Result<Option<ChunkingSpec>, String> {
        let fixed = |chunk_seconds| ChunkingSpec {
            mode: ChunkMode::Fixed,
            chunk_seconds,
            min_duration_seconds: 4.0 * chunk_seconds,
        };
        let o = match v {
            Value::Null | Value::Bool(false) => return Ok(None),
            Value::Bool(true) => return Ok(Some(fixed(DEFAULT_CHUNK_SECONDS))),
            Value::String(s) if s == "auto" => {
                return Ok(Some(ChunkingSpec { mode: ChunkMode::Auto, ..fixed(DEFAULT_CHUNK_SECONDS) }));
            }
            Value::Object(o) => o,
            _ => return Err("chunking must be true, \"auto\" or {enabled, chunk_seconds}".into()),
        };
        if let Some(k) = o.keys().find(|k| !["enabled", "chunk_seconds", "min_duration_seconds"].contains(&k.as_str()))
        {
            return Err(format!("chunking has no field '{k}' (known: enabled, chunk_seconds, min_duration_seconds)"));
        }
        let number = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, String> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| (lo..=hi).contains(x))
                    .map(Some)
                    .ok_or(format!("chunking.{k} must be a number from {lo} to {hi}")),
            }
        };
        let chunk_seconds = number("chunk_seconds", 1.0, 3600.0)?.unwrap_or(DEFAULT_CHUNK_SECONDS);
        let min = number("min_duration_seconds", 0.0, 86_400.0)?;
        let mode = match o.get("enabled") {
            None | Some(Value::Bool(true)) => ChunkMode::Fixed,
            Some(Value::Bool(false)) => return Ok(None),
            Some(Value::String(s)) if s == "auto" => ChunkMode::Auto,
            Some(_) => return Err("chunking.enabled must be true, false or \"auto\"".into()),
        };
        Ok(Some(ChunkingSpec { mode, min_duration_seconds: min.unwrap_or(4.0 * chunk_seconds), chunk_seconds }))
    }
}

impl ChunkingSpec {
    /// Whether a source of `duration` seconds is chunked with `workers` nodes able to
    /// take chunks: always in fixed mode; in auto mode only a long source, and only
    /// when chunks could run side by side.
    pub fn applies(&self, duration: f64, workers: usize) -> bool {
        self.mode == ChunkMode::Fixed || (duration > self.min_duration_seconds && workers >= 2)
    }
}

/// One chunk of the source: `[start, end)` in source seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chunk {
    pub start: f64,
    pub end: f64,
    /// Its first frame is a source keyframe (the seek decodes nothing it drops).
    pub on_keyframe: bool,
}

/// Where a source of `duration` seconds at `fps` is cut. Boundaries near a multiple of
/// `chunk_seconds` move to a source keyframe within a quarter chunk; with none there
/// (a source with sparse keyframes) the cut is at the frame nearest the multiple and the
/// chunk's encode trims to it. `align`: every boundary a multiple of it (a ladder's
/// segment length, so chunks end where segments do). The last chunk is at least half
/// a chunk long.
pub fn split(duration: f64, fps: f64, keyframes: &[f64], chunk_seconds: f64, align: Option<f64>) -> Vec<Chunk> {
    let fps = if fps.is_finite() && fps > 0.0 { fps } else { 30.0 };
    let frame = 1.0 / fps;
    let mut chunk = chunk_seconds.max(duration / MAX_CHUNKS as f64).max(frame);
    if let Some(seg) = align.filter(|s| *s > 0.0) {
        chunk = (chunk / seg).ceil() * seg;
    }
    let is_keyframe = |t: f64| keyframes.iter().any(|k| (k - t).abs() < frame / 2.0);
    let mut cuts = vec![(0.0, true)];
    let mut k = 1.0;
    while k * chunk < duration - chunk / 2.0 {
        let target = k * chunk;
        k += 1.0;
        let prev = cuts.last().map_or(0.0, |c| c.0);
        let snapped = match align {
            Some(_) => None,
            None => keyframes
                .iter()
                .copied()
                .filter(|kf| (kf - target).abs() <= chunk / 4.0 && *kf > prev + frame && *kf < duration - frame)
                .min_by(|a, b| (a - target).abs().total_cmp(&(b - target).abs())),
        };
        let cut = match snapped {
            Some(kf) => (kf, true),
            None => {
                let t = (target * fps).round() / fps;
                (t, is_keyframe(t))
            }
        };
        if cut.0 > prev + frame && cut.0 < duration - frame {
            cuts.push(cut);
        }
    }
    cuts.iter()
        .enumerate()
        .map(|(i, &(start, on_keyframe))| Chunk { start, end: cuts.get(i + 1).map_or(duration, |c| c.0), on_keyframe })
        .collect()
}

/// Keyframe times from `ffprobe -select_streams v:0 -show_entries packet=pts_time,flags
/// -of csv=p=0` (lines `12.000000,K__`), sorted, at most [`MAX_KEYFRAMES`] (evenly
/// thinned: every one kept is still a keyframe).
pub fn parse_keyframes(csv: &str) -> Vec<f64> {
    let mut k: Vec<f64> = csv
        .lines()
        .filter_map(|l| {
            let (t, flags) = l.trim().split_once(',')?;
            flags.contains('K').then(|| t.parse::<f64>().ok()).flatten()
        })
        .filter(|t| t.is_finite() && *t >= 0.0)
        .collect();
    k.sort_by(f64::total_cmp);
    k.dedup();
    if k.len() > MAX_KEYFRAMES {
        let step = k.len().div_ceil(MAX_KEYFRAMES);
        k = k.into_iter().step_by(step).collect();
    }
    k
}

/// The parameters of the job an encode child inherits (how to encode, not what or
/// where to).
const ENCODE_KEYS: &[&str] = &[
    "codec",
    "bitrate",
    "max_bitrate",
    "crf",
    "preset",
    "resolution",
    "resolution_width",
    "resolution_height",
    "fps",
    "frame_rate",
    "pix_fmt",
    "keyframe_seconds",
    "threads",
    "timeout_seconds",
    "resource_limits",
    "hwaccel",
    "gpu",
    "gpu_memory_mb",
    "engine",
];
const AUDIO_KEYS: &[&str] = &["audio", "audio_bitrate", "audio_channels", "timeout_seconds"];

fn pick(params: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| params.get(*k).map(|v| (k.to_string(), v.clone()))).collect()
}

/// What a chunked job looks like once its source is probed.
pub struct Source<'a> {
    pub input: &'a str,
    pub info: &'a InputInfo,
    /// The job's own cut: seconds skipped at the start, and the most it keeps.
    pub start_seconds: f64,
    pub max_seconds: Option<f64>,
}

impl Source<'_> {
    /// The length of the job's timeline: the source after the job's own cut.
    pub fn duration(&self) -> f64 {
        let whole = self.info.duration_seconds.unwrap_or(0.0) - self.start_seconds;
        self.max_seconds.map_or(whole, |m| whole.min(m)).max(0.0)
    }
    fn fps(&self) -> f64 {
        self.video().and_then(|v| v.frame_rate).filter(|f| f.is_finite() && *f > 0.0).unwrap_or(30.0)
    }
    fn video(&self) -> Option<&super::media::StreamInfo> {
        self.info.streams.iter().find(|s| s.kind == "video")
    }
    /// Keyframes on the job's own timeline.
    fn keyframes(&self) -> Vec<f64> {
        self.info.keyframes.iter().flatten().map(|k| k - self.start_seconds).filter(|k| *k >= 0.0).collect()
    }
}

/// `params` with the window `[start, end)` of the job's timeline (absolute in the
/// source: the job's own start added); the last chunk of an uncut job runs to the end.
fn window(params: &mut Map<String, Value>, src: &Source, c: &Chunk, last: bool) {
    let start = src.start_seconds + c.start;
    if start > 0.0 {
        params.insert("start_seconds".into(), json!(round6(start)));
    }
    if !last || src.max_seconds.is_some() {
        params.insert("duration".into(), json!(round6(c.end - c.start)));
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn output_ext(params: &Map<String, Value>) -> String {
    let out = params.get("output").and_then(Value::as_str).unwrap_or("");
    out.rsplit_once('.').map_or("mp4", |(_, e)| e).to_string()
}

/// The output containers a stitch can concatenate losslessly.
pub const STITCHABLE: &[&str] = &["mp4", "mov", "m4v", "mkv", "webm"];

/// One encode child per chunk (`<prefix>NNN`, from 001), each `base` over its window,
/// and what a stitch reads of them: (label, output name) in order.
fn chunk_children(
    base: &Map<String, Value>,
    src: &Source,
    chunks: &[Chunk],
    prefix: &str,
    ext: &str,
    weight: impl Fn(&Chunk) -> f64,
) -> (Vec<PlannedChild>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut reads = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let label = format!("{prefix}{:03}", i + 1);
        let mut p = base.clone();
        window(&mut p, src, c, i + 1 == chunks.len());
        let name = format!("{label}.{ext}");
        p.insert("output".into(), json!(name));
        reads.push((label.clone(), name));
        out.push(PlannedChild {
            label,
            stage: Stage::Chunk,
            params: p,
            weight: weight(c),
            after: vec![],
            reads: vec![],
        });
    }
    (out, reads)
}

/// The plan of a chunked job: chunks + audio + stitch, or (auto mode, a short source or
/// one capable worker) a single whole encode. `workers`: how many nodes could take a
/// chunk now.
pub fn plan(
    spec: &ChunkingSpec,
    params: &Map<String, Value>,
    src: &Source,
    workers: usize,
) -> Result<Vec<PlannedChild>, String> {
    let video = src.video().ok_or("the source has no video stream to chunk")?;
    let duration = src.duration();
    if duration <= 0.0 {
        return Err("the source's duration is unknown or zero; it cannot be chunked".into());
    }
    let pixels = f64::from(video.width.unwrap_or(1280)) * f64::from(video.height.unwrap_or(720)) / 1e6;
    let ext = output_ext(params);
    let output = params.get("output").and_then(Value::as_str).map_or_else(|| format!("output.{ext}"), str::to_string);
    let mut base = pick(params, ENCODE_KEYS);
    base.insert("input".into(), json!(src.input));
    if !spec.applies(duration, workers) {
        let mut p = base;
        p.extend(pick(params, &["audio", "audio_bitrate", "audio_channels", "start_seconds", "duration", "qoe"]));
        p.insert("output".into(), json!(output));
        return Ok(vec![PlannedChild {
            label: "encode".into(),
            stage: Stage::Whole,
            params: p,
            weight: duration * pixels,
            after: vec![],
            reads: vec![],
        }]);
    }
    let chunks = split(duration, src.fps(), &src.keyframes(), spec.chunk_seconds, None);
    base.insert("audio".into(), json!("none"));
    let (mut out, mut reads) = chunk_children(&base, src, &chunks, "chunk_", &ext, |c| (c.end - c.start) * pixels);
    let has_audio = src.info.streams.iter().any(|s| s.kind == "audio")
        && params.get("audio").and_then(Value::as_str) != Some("none");
    if has_audio {
        let mut p = pick(params, AUDIO_KEYS);
        p.insert("input".into(), json!(src.input));
        window(&mut p, src, &Chunk { start: 0.0, end: duration, on_keyframe: true }, true);
        let name = if ext == "webm" { "audio.webm" } else { "audio.mp4" };
        p.insert("output".into(), json!(name));
        reads.push(("audio".into(), name.into()));
        out.push(PlannedChild {
            label: "audio".into(),
            stage: Stage::Audio,
            params: p,
            weight: duration * 0.02,
            after: vec![],
            reads: vec![],
        });
    }
    let mut p = pick(params, &["timeout_seconds", "qoe"]);
    p.insert("output".into(), json!(output));
    out.push(PlannedChild {
        label: "stitch".into(),
        stage: Stage::Stitch,
        params: p,
        weight: duration * 0.01 * pixels.max(0.1),
        after: reads.iter().map(|(l, _)| l.clone()).collect(),
        reads,
    });
    Ok(out)
}

/// A ladder whose renditions are chunked: each rendition becomes its chunks (cut on
/// multiples of the segment length, so every chunk starts a segment) and a stitch
/// child under the rendition's label, which the packaging step reads as before.
pub fn chunk_renditions(
    planned: Vec<PlannedChild>,
    spec: &ChunkingSpec,
    segment_seconds: f64,
    src: &Source,
) -> Vec<PlannedChild> {
    let duration = src.duration();
    let rungs = planned.iter().filter(|c| c.stage == Stage::Rendition).count().max(1);
    let chunk_seconds = spec.chunk_seconds.max(duration * rungs as f64 / MAX_CHUNKS as f64);
    let chunks = split(duration, src.fps(), &[], chunk_seconds, Some(segment_seconds));
    if chunks.len() < 2 {
        return planned;
    }
    let mut out = Vec::new();
    for child in planned {
        if child.stage != Stage::Rendition {
            out.push(child);
            continue;
        }
        let prefix = format!("{}_c", child.label);
        let (children, reads) = chunk_children(&child.params, src, &chunks, &prefix, "mp4", |c| {
            child.weight * (c.end - c.start) / duration
        });
        out.extend(children);
        let mut p = pick(&child.params, &["timeout_seconds"]);
        p.insert("output".into(), json!(format!("{}.mp4", child.label)));
        out.push(PlannedChild {
            label: child.label,
            stage: Stage::RenditionStitch,
            params: p,
            weight: child.weight * 0.02,
            after: reads.iter().map(|(l, _)| l.clone()).collect(),
            reads,
        });
    }
    out
}

/// Whether a job may be chunked: a file input (the plan needs its probe), never a live
/// stream (a live job has no end to split), an output the stitch can concatenate.
pub fn check_chunkable(has_input: bool, live: bool, output: Option<&str>) -> Result<(), String> {
    if !has_input {
        return Err("chunking needs an input file or URL (chunks are cut from the probed source)".into());
    }
    if live {
        return Err("live and RTMP jobs are never chunked (a stream has no end to split); drop 'chunking'".into());
    }
    if let Some(ext) = output.and_then(|o| o.rsplit_once('.')).map(|(_, e)| e)
        && !STITCHABLE.contains(&ext)
    {
        return Err(format!("a chunked output must be one of: {} (not .{ext})", STITCHABLE.join(", ")));
    }
    Ok(())
}

/// The stitch step's concat list (relative names: the concat demuxer's safe mode).
pub fn concat_list(names: &[String]) -> String {
    names.iter().map(|n| format!("file '{n}'\n")).collect()
}

/// The stitch step's arguments after the common prefix: the chunks concatenated with
/// the concat demuxer (list in the working directory), the audio (if any) muxed in,
/// nothing re-encoded.
pub fn stitch_args(list: &str, audio: Option<&std::path::Path>, output: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = ["-f", "concat", "-safe", "1", "-protocol_whitelist", "file", "-i", list]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(p) = audio {
        a.extend(super::argv::file_input_args(p));
    }
    a.extend(["-map".into(), "0:v".into()]);
    if audio.is_some() {
        a.extend(["-map".into(), "1:a".into()]);
    }
    a.extend(["-c".into(), "copy".into()]);
    if output.extension().is_some_and(|e| e == "mp4" || e == "mov" || e == "m4v") {
        a.extend(["-movflags".into(), "+faststart".into()]);
    }
    a.extend(["-y".into(), output.to_string_lossy().into_owned()]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::media::StreamInfo;

    fn source(secs: f64, keyframes: Option<Vec<f64>>, audio: bool) -> InputInfo {
        let mut streams = vec![StreamInfo {
            kind: "video".into(),
            codec: "h264".into(),
            width: Some(320),
            height: Some(180),
            frame_rate: Some(25.0),
            ..Default::default()
        }];
        if audio {
            streams.push(StreamInfo { kind: "audio".into(), codec: "aac".into(), ..Default::default() });
        }
        InputInfo { format: "mov".into(), duration_seconds: Some(secs), streams, keyframes, ..Default::default() }
    }

    fn every(step: f64, until: f64) -> Vec<f64> {
        (0..).map(|i| i as f64 * step).take_while(|t| *t < until).collect()
    }

    #[test]
    fn parse_forms_and_bounds() {
        assert_eq!(ChunkingSpec::parse(&json!(null)).unwrap(), None);
        assert_eq!(ChunkingSpec::parse(&json!({"enabled": false, "chunk_seconds": 5})).unwrap(), None);
        let f = ChunkingSpec::parse(&json!({"enabled": true, "chunk_seconds": 5})).unwrap().unwrap();
        assert_eq!((f.mode, f.chunk_seconds), (ChunkMode::Fixed, 5.0));
        let a = ChunkingSpec::parse(&json!("auto")).unwrap().unwrap();
        assert_eq!((a.mode, a.chunk_seconds, a.min_duration_seconds), (ChunkMode::Auto, 30.0, 120.0));
        let a = ChunkingSpec::parse(&json!({"enabled": "auto", "min_duration_seconds": 10})).unwrap().unwrap();
        assert_eq!((a.mode, a.min_duration_seconds), (ChunkMode::Auto, 10.0));
        for (bad, why) in [
            (json!({"chunk_seconds": 0}), "1 to 3600"),
            (json!({"chunk_seconds": "5"}), "1 to 3600"),
            (json!({"enabled": "yes"}), "true, false or \"auto\""),
            (json!({"size": 5}), "no field 'size'"),
            (json!(5), "must be true"),
        ] {
            let e = ChunkingSpec::parse(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn split_moves_cuts_to_nearby_keyframes_and_trims_where_there_are_none() {
        let cuts = |c: &[Chunk]| c.iter().map(|c| (c.start, c.end, c.on_keyframe)).collect::<Vec<_>>();
        // 20 s, keyframes every 2 s, 5 s chunks: 5 → 4 or 6, 10, 15 → 14 or 16.
        let c = split(20.0, 25.0, &every(2.0, 20.0), 5.0, None);
        assert_eq!(c.len(), 4);
        assert!(c.iter().all(|c| c.on_keyframe), "{c:?}");
        assert_eq!(c[1].end, 10.0);
        assert_eq!(c.last().unwrap().end, 20.0);
        // One keyframe only: exact frame-time cuts.
        assert_eq!(
            cuts(&split(20.0, 25.0, &[0.0], 5.0, None)),
            [(0.0, 5.0, true), (5.0, 10.0, false), (10.0, 15.0, false), (15.0, 20.0, false)]
        );
        // The last chunk is never a sliver: 21 s in 5 s chunks is 4 chunks, the last 6 s.
        let c = split(21.0, 25.0, &[0.0], 5.0, None);
        assert_eq!(c.len(), 4);
        assert_eq!((c[3].start, c[3].end), (15.0, 21.0));
        // Shorter than a chunk and a half: one chunk.
        assert_eq!(split(7.0, 25.0, &[0.0], 5.0, None).len(), 1);
        // Aligned to 2 s segments: 5 s chunks become 6 s ones, cuts on multiples of 2.
        assert_eq!(
            cuts(&split(20.0, 25.0, &[], 5.0, Some(2.0))),
            [(0.0, 6.0, false), (6.0, 12.0, false), (12.0, 20.0, false)].map(|(s, e, k)| (s, e, k || s == 0.0))
        );
        // A cut snaps to the frame grid (29.97 fps) and chunks are capped in number.
        let c = split(10.0, 30000.0 / 1001.0, &[0.0], 3.0, None);
        assert!((c[1].start * 30000.0 / 1001.0 - (c[1].start * 30000.0 / 1001.0).round()).abs() < 1e-9);
        assert!(split(86_400.0, 25.0, &[0.0], 1.0, None).len() <= MAX_CHUNKS);
    }

    #[test]
    fn keyframes_are_parsed_sorted_and_thinned() {
        assert_eq!(parse_keyframes("0.000000,K__\n0.040000,___\n2.000000,K_\n\nbad\n1.0,__K\n"), [0.0, 1.0, 2.0]);
        let many: String = (0..5000).map(|i| format!("{i}.0,K_\n")).collect();
        let k = parse_keyframes(&many);
        assert!(k.len() <= MAX_KEYFRAMES && k.len() > MAX_KEYFRAMES / 2);
        assert_eq!(k[0], 0.0);
    }

    fn params() -> Map<String, Value> {
        json!({"input": "src.mp4", "codec": "h264", "crf": 23, "preset": "medium", "output": "film.mp4",
               "audio_bitrate": "96k", "max_retries": 3, "chunking": {"chunk_seconds": 5}})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn a_chunked_job_is_chunks_audio_once_and_a_stitch() {
        let spec = ChunkingSpec::parse(&json!({"chunk_seconds": 5})).unwrap().unwrap();
        let info = source(20.0, Some(every(2.0, 20.0)), true);
        let src = Source { input: "src.mp4", info: &info, start_seconds: 0.0, max_seconds: None };
        let p = plan(&spec, &params(), &src, 1).unwrap();
        let labels: Vec<&str> = p.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["chunk_001", "chunk_002", "chunk_003", "chunk_004", "audio", "stitch"]);
        let first = &p[0].params;
        assert_eq!(first["crf"], 23);
        assert_eq!(first["audio"], "none");
        assert_eq!(first["output"], "chunk_001.mp4");
        assert!(first.get("start_seconds").is_none() && first.get("chunking").is_none());
        assert_eq!(p[1].params["start_seconds"], json!(p[0].params["duration"].as_f64().unwrap()));
        assert!(p[3].params.get("duration").is_none(), "the last chunk runs to the end");
        assert_eq!(p[4].stage, Stage::Audio);
        assert_eq!(p[4].params["audio_bitrate"], "96k");
        let stitch = &p[5];
        assert_eq!(stitch.stage, Stage::Stitch);
        assert_eq!(stitch.params["output"], "film.mp4");
        assert_eq!(stitch.after.len(), 5);
        assert_eq!(stitch.reads[4], ("audio".to_string(), "audio.mp4".to_string()));
        let total: f64 = p[..4].iter().map(|c| c.weight).sum();
        assert!((total - 20.0 * 320.0 * 180.0 / 1e6).abs() < 1e-9, "chunks weigh their share of the work");
        // The job's own cut: 2 s skipped, 12 s kept → the chunks' windows are absolute.
        let cut = Source { start_seconds: 2.0, max_seconds: Some(12.0), ..src };
        let p = plan(&spec, &params(), &cut, 1).unwrap();
        assert_eq!(p[0].params["start_seconds"], 2.0);
        let last = p.iter().rfind(|c| c.stage == Stage::Chunk).unwrap();
        let end = last.params["start_seconds"].as_f64().unwrap() + last.params["duration"].as_f64().unwrap();
        assert!((end - 14.0).abs() < 1e-6, "{end}");
        assert_eq!(p.iter().find(|c| c.label == "audio").unwrap().params["duration"], 12.0);
    }

    #[test]
    fn auto_chunks_only_long_sources_with_workers_to_share_them() {
        let auto = ChunkingSpec::parse(&json!({"enabled": "auto", "chunk_seconds": 5})).unwrap().unwrap();
        let info = source(20.0, Some(vec![0.0]), false);
        let src = Source { input: "src.mp4", info: &info, start_seconds: 0.0, max_seconds: None };
        let whole = plan(&auto, &params(), &src, 4).unwrap();
        assert_eq!(whole.len(), 1, "20 s is under 4 chunks");
        assert_eq!(whole[0].stage, Stage::Whole);
        assert_eq!(whole[0].params["output"], "film.mp4");
        assert_eq!(whole[0].params["audio_bitrate"], "96k");
        let long = source(60.0, Some(vec![0.0]), false);
        let src = Source { info: &long, ..src };
        assert_eq!(plan(&auto, &params(), &src, 1).unwrap().len(), 1, "one worker: no point");
        let p = plan(&auto, &params(), &src, 2).unwrap();
        assert_eq!(p.iter().filter(|c| c.stage == Stage::Chunk).count(), 12);
        assert!(p.iter().all(|c| c.label != "audio"), "a silent source has no audio step");
    }

    #[test]
    fn ladder_renditions_are_chunked_on_segment_boundaries() {
        let ladder = crate::domain::ladder::PackageSpec::parse(
            &json!({"segment_seconds": 2, "ladder": [{"height": 180, "bitrate": 300}]}),
        )
        .unwrap();
        let info = source(20.0, Some(vec![0.0]), true);
        let planned = crate::domain::ladder::plan(&ladder, "src.mp4", &info).unwrap();
        let spec = ChunkingSpec::parse(&json!({"chunk_seconds": 5})).unwrap().unwrap();
        let src = Source { input: "src.mp4", info: &info, start_seconds: 0.0, max_seconds: None };
        let p = chunk_renditions(planned, &spec, 2.0, &src);
        let labels: Vec<&str> = p.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["180p_c001", "180p_c002", "180p_c003", "180p", "audio_128k", "package"]);
        assert_eq!(p[1].params["start_seconds"], 6.0, "5 s rounds up to 3 segments");
        assert_eq!(p[1].params["keyframe_seconds"], 2.0);
        assert_eq!(p[3].stage, Stage::RenditionStitch);
        assert_eq!(p[3].params["output"], "180p.mp4");
        assert_eq!(p[3].after, ["180p_c001", "180p_c002", "180p_c003"]);
        assert_eq!(p[5].reads[0], ("180p".to_string(), "180p.mp4".to_string()), "the package reads the stitch");
    }

    #[test]
    fn stitch_copies_without_reencoding() {
        use std::path::Path;
        assert_eq!(concat_list(&["a.mp4".into(), "b.mp4".into()]), "file 'a.mp4'\nfile 'b.mp4'\n");
        let a = stitch_args("concat.txt", Some(Path::new("/w/audio.mp4")), Path::new("/w/out/film.mp4")).join(" ");
        assert!(a.starts_with("-f concat -safe 1 -protocol_whitelist file -i concat.txt"), "{a}");
        assert!(a.contains("-map 0:v -map 1:a -c copy -movflags +faststart -y /w/out/film.mp4"), "{a}");
        let a = stitch_args("concat.txt", None, Path::new("/w/out/film.mkv")).join(" ");
        assert!(!a.contains("1:a") && !a.contains("faststart"), "{a}");
    }
}
