//! Streaming packages, pure: the `package` parameter (an ABR ladder for HLS and/or
//! DASH, audio renditions, thumbnails), its plan for a probed source (rungs above the
//! source dropped, aspect and frame rate kept, 10-bit kept where the codec can carry
//! it, keyframes aligned to segment boundaries). The graph actor turns a plan into
//! child jobs; the renditions are ordinary encodes with a fixed keyframe interval, the
//! other steps' argv and files are `domain::packaging`.

use super::media::InputInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const MAX_RUNGS: usize = 10;
pub const MAX_AUDIO: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    Hls,
    Dash,
    Both,
}

impl PackageFormat {
    pub fn hls(self) -> bool {
        matches!(self, PackageFormat::Hls | PackageFormat::Both)
    }
    pub fn dash(self) -> bool {
        matches!(self, PackageFormat::Dash | PackageFormat::Both)
    }
}

/// One video rung as asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    pub height: u32,
    pub bitrate_kbps: u32,
    pub max_bitrate_kbps: Option<u32>,
    /// h264 (default) or hevc.
    pub codec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioRung {
    pub bitrate_kbps: u32,
    pub channels: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thumbnails {
    pub every_seconds: f64,
    pub sprite: bool,
    pub width: u32,
}

/// The validated `package` parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageSpec {
    pub format: PackageFormat,
    pub segment_seconds: f64,
    pub ladder: Vec<Rung>,
    pub audio: Vec<AudioRung>,
    pub thumbnails: Option<Thumbnails>,
    pub max_fps: Option<f64>,
    /// Package the source's text subtitles (HLS: WebVTT renditions). Default true.
    pub subtitles: bool,
}

fn kbps(v: &Value, what: &str) -> Result<u32, String> {
    let k = match v {
        Value::Number(n) => n.as_u64().map(|n| if n >= 10_000 { n / 1000 } else { n }),
        Value::String(s) => super::params::parse_bitrate_kbps(s).map(u64::from),
        _ => None,
    };
    k.filter(|k| (16..=200_000).contains(k))
        .map(|k| k as u32)
        .ok_or_else(|| format!("{what} must be a bitrate like \"800k\" or 800 (kbit/s), 16k to 200M"))
}

fn number(v: Option<&Value>, what: &str, range: std::ops::RangeInclusive<f64>) -> Result<Option<f64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| range.contains(x))
            .map(Some)
            .ok_or_else(|| format!("{what} must be a number from {} to {}", range.start(), range.end())),
    }
}

fn known(obj: &Map<String, Value>, what: &str, keys: &[&str]) -> Result<(), String> {
    match obj.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(format!("{what} has no field '{k}' (known: {})", keys.join(", "))),
        None => Ok(()),
    }
}

impl PackageSpec {
    /// Parse and bound the `package` parameter.
    pub fn parse(v: &Value) -> Result<PackageSpec, String> {
        let o = v.as_object().ok_or("package must be an object")?;
        known(o, "package", &["format", "segment_seconds", "ladder", "audio", "thumbnails", "max_fps", "subtitles"])?;
        let format = match o.get("format").and_then(Value::as_str).unwrap_or("hls") {
            "hls" => PackageFormat::Hls,
            "dash" => PackageFormat::Dash,
            "both" => PackageFormat::Both,
            f => return Err(format!("package.format '{f}' must be hls, dash or both")),
        };
        let segment_seconds = number(o.get("segment_seconds"), "package.segment_seconds", 1.0..=20.0)?.unwrap_or(4.0);
        let mut ladder = Vec::new();
        for (i, r) in o.get("ladder").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
            let what = format!("package.ladder[{i}]");
            let r = r.as_object().ok_or(format!("{what} must be an object"))?;
            known(r, &what, &["height", "bitrate", "max_bitrate", "codec"])?;
            let height = r
                .get("height")
                .and_then(Value::as_u64)
                .filter(|h| (64..=4320).contains(h) && h % 2 == 0)
                .ok_or(format!("{what}.height must be an even number of lines from 64 to 4320"))?;
            let bitrate_kbps = kbps(r.get("bitrate").unwrap_or(&Value::Null), &format!("{what}.bitrate"))?;
            let max_bitrate_kbps = match r.get("max_bitrate") {
                None | Some(Value::Null) => None,
                Some(v) => Some(kbps(v, &format!("{what}.max_bitrate"))?.max(bitrate_kbps)),
            };
            let codec = r.get("codec").and_then(Value::as_str).unwrap_or("h264");
            if !matches!(codec, "h264" | "hevc") {
                return Err(format!("{what}.codec '{codec}' must be h264 or hevc (both play in HLS and DASH)"));
            }
            ladder.push(Rung { height: height as u32, bitrate_kbps, max_bitrate_kbps, codec: codec.into() });
        }
        if ladder.len() > MAX_RUNGS {
            return Err(format!("package.ladder has {} rungs; at most {MAX_RUNGS}", ladder.len()));
        }
        let audio = match o.get("audio") {
            None | Some(Value::Null) => vec![AudioRung { bitrate_kbps: 128, channels: None }],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let what = format!("package.audio[{i}]");
                    let r = r.as_object().ok_or(format!("{what} must be an object"))?;
                    known(r, &what, &["bitrate", "channels"])?;
                    let channels = number(r.get("channels"), &format!("{what}.channels"), 1.0..=8.0)?.map(|c| c as u32);
                    Ok(AudioRung { bitrate_kbps: kbps(r.get("bitrate").unwrap_or(&json!(128)), &what)?, channels })
                })
                .collect::<Result<Vec<_>, String>>()?,
            Some(_) => return Err("package.audio must be a list".into()),
        };
        if audio.len() > MAX_AUDIO {
            return Err(format!("package.audio has {} entries; at most {MAX_AUDIO}", audio.len()));
        }
        let thumbnails = match o.get("thumbnails") {
            None | Some(Value::Null) => None,
            Some(t) => {
                let t = t.as_object().ok_or("package.thumbnails must be an object")?;
                known(t, "package.thumbnails", &["every_seconds", "sprite", "width"])?;
                Some(Thumbnails {
                    every_seconds: number(t.get("every_seconds"), "package.thumbnails.every_seconds", 0.5..=3600.0)?
                        .unwrap_or(10.0),
                    sprite: t.get("sprite").and_then(Value::as_bool).unwrap_or(false),
                    width: number(t.get("width"), "package.thumbnails.width", 32.0..=1920.0)?.unwrap_or(160.0) as u32
                        & !1,
                })
            }
        };
        if ladder.is_empty() && thumbnails.is_none() {
            return Err("package needs a ladder (at least one rung) or thumbnails".into());
        }
        let max_fps = number(o.get("max_fps"), "package.max_fps", 1.0..=240.0)?;
        let subtitles = match o.get("subtitles") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("package.subtitles must be true or false".into()),
        };
        Ok(PackageSpec { format, segment_seconds, ladder, audio, thumbnails, max_fps, subtitles })
    }
}

/// What a child of a package graph does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Download and probe the source; the graph is planned from what it finds.
    Probe,
    Rendition,
    Audio,
    Thumbnails,
    /// The source's text subtitles as WebVTT files (one per track).
    Subtitles,
    Package,
    /// One chunk of a chunked encode (a window of the source, no audio).
    Chunk,
    /// A chunked job's chunks concatenated and its audio muxed in: the job's output.
    Stitch,
    /// A chunked rendition's chunks concatenated (read by the packaging step).
    RenditionStitch,
    /// A chunked job in auto mode that chose not to chunk: one whole encode.
    Whole,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::Rendition => "rendition",
            Stage::Audio => "audio",
            Stage::Thumbnails => "thumbnails",
            Stage::Subtitles => "subtitles",
            Stage::Package => "package",
            Stage::Chunk => "chunk",
            Stage::Stitch => "stitch",
            Stage::RenditionStitch => "rendition_stitch",
            Stage::Whole => "whole",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        [
            Stage::Probe,
            Stage::Rendition,
            Stage::Audio,
            Stage::Thumbnails,
            Stage::Subtitles,
            Stage::Package,
            Stage::Chunk,
            Stage::Stitch,
            Stage::RenditionStitch,
            Stage::Whole,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    /// Its outputs are the graph's (listed and downloadable under the parent).
    pub fn publishes(self) -> bool {
        matches!(self, Stage::Package | Stage::Thumbnails | Stage::Stitch | Stage::Whole)
    }
    /// Its inputs are earlier steps' outputs (`inputs`), not the job's source.
    pub fn joins(self) -> bool {
        matches!(self, Stage::Package | Stage::Stitch | Stage::RenditionStitch)
    }
}

/// One child the plan asks for: its label (unique in the graph), parameters, expected
/// work (for the parent's progress) and the labels it waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChild {
    pub label: String,
    pub stage: Stage,
    pub params: Map<String, Value>,
    pub weight: f64,
    pub after: Vec<String>,
    /// Outputs of earlier children this one reads, as (label, output name).
    pub reads: Vec<(String, String)>,
}

/// Codecs whose encoders here keep 10-bit 4:2:0.
fn carries_10bit(codec: &str) -> bool {
    matches!(codec, "hevc" | "h265" | "av1" | "vp9")
}

/// Whether the probed video is more than 8 bits deep.
pub fn is_high_bit_depth(info: &InputInfo) -> bool {
    info.streams.iter().find(|s| s.kind == "video").is_some_and(|v| {
        v.bit_depth.is_some_and(|d| d > 8) || v.pix_fmt.as_deref().is_some_and(|p| p.contains("10") || p.contains("12"))
    })
}

/// The pixel format an encode to `codec` keeps from a source: 10-bit when both are.
pub fn output_pix_fmt(codec: &str, source_high_depth: bool) -> &'static str {
    if source_high_depth && carries_10bit(codec) { "yuv420p10le" } else { "yuv420p" }
}

/// The children of a package for a probed source (the probe child already ran).
pub fn plan(spec: &PackageSpec, input: &str, info: &InputInfo) -> Result<Vec<PlannedChild>, String> {
    let video = info.streams.iter().find(|s| s.kind == "video");
    let audio_tracks = info.streams.iter().filter(|s| s.kind == "audio").count();
    let duration = info.duration_seconds.unwrap_or(0.0).max(0.1);
    let mut out = Vec::new();
    let mut renditions: Vec<String> = Vec::new();
    if !spec.ladder.is_empty() {
        let v = video.ok_or("the source has no video stream to build a ladder from")?;
        let (sw, sh) = (v.width.unwrap_or(0), v.height.unwrap_or(0));
        if sw == 0 || sh == 0 {
            return Err("the source's video has no known size".into());
        }
        let src_fps = v.frame_rate.filter(|f| *f > 0.0 && f.is_finite()).unwrap_or(30.0);
        let fps = spec.max_fps.map_or(src_fps, |m| src_fps.min(m));
        // An integer rate keeps `-r` exact; a fractional source rate (29.97) is kept as is.
        let fps_param: Value = if (fps - fps.round()).abs() < 1e-6 { json!(fps.round() as u64) } else { json!(fps) };
        let deep = is_high_bit_depth(info);
        let mut rungs: Vec<&Rung> = spec.ladder.iter().filter(|r| r.height <= sh).collect();
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        rungs.dedup_by_key(|r| r.height);
        let fallback;
        if rungs.is_empty() {
            // Every rung is above the source: one rendition at the source's own height.
            let smallest = spec.ladder.iter().min_by_key(|r| r.height).expect("ladder is not empty");
            fallback = Rung { height: sh & !1, ..smallest.clone() };
            rungs.push(&fallback);
        }
        for r in rungs {
            let h = r.height;
            let w = ((u64::from(sw) * u64::from(h) + u64::from(sh) / 2) / u64::from(sh)) as u32 & !1;
            let label = format!("{h}p");
            let mut p = Map::new();
            p.insert("input".into(), json!(input));
            p.insert("codec".into(), json!(r.codec));
            p.insert("bitrate".into(), json!(format!("{}k", r.bitrate_kbps)));
            if let Some(m) = r.max_bitrate_kbps {
                p.insert("max_bitrate".into(), json!(format!("{m}k")));
            }
            p.insert("resolution".into(), json!(format!("{w}x{h}")));
            p.insert("fps".into(), fps_param.clone());
            p.insert("keyframe_seconds".into(), json!(spec.segment_seconds));
            p.insert("pix_fmt".into(), json!(output_pix_fmt(&r.codec, deep)));
            p.insert("audio".into(), json!("none"));
            p.insert("output".into(), json!(format!("{label}.mp4")));
            out.push(PlannedChild {
                label: label.clone(),
                stage: Stage::Rendition,
                params: p,
                weight: f64::from(w) * f64::from(h) * duration * fps / 1e6,
                after: vec![],
                reads: vec![],
            });
            renditions.push(label);
        }
    }
    let mut audio_labels = Vec::new();
    if !spec.ladder.is_empty() && audio_tracks > 0 {
        for a in &spec.audio {
            let label = format!("audio_{}k", a.bitrate_kbps);
            if audio_labels.contains(&label) {
                continue;
            }
            let mut p = Map::new();
            p.insert("input".into(), json!(input));
            p.insert("audio_bitrate".into(), json!(format!("{}k", a.bitrate_kbps)));
            if let Some(c) = a.channels {
                p.insert("audio_channels".into(), json!(c));
            }
            p.insert("audio".into(), json!("all"));
            p.insert("output".into(), json!(format!("{label}.mp4")));
            out.push(PlannedChild {
                label: label.clone(),
                stage: Stage::Audio,
                params: p,
                weight: duration * audio_tracks as f64 * 0.02,
                after: vec![],
                reads: vec![],
            });
            audio_labels.push(label);
        }
    }
    if let Some(t) = &spec.thumbnails {
        let mut p = Map::new();
        p.insert("input".into(), json!(input));
        p.insert("thumbnails".into(), serde_json::to_value(t).unwrap_or_default());
        p.insert("duration".into(), json!(duration));
        out.push(PlannedChild {
            label: "thumbnails".into(),
            stage: Stage::Thumbnails,
            params: p,
            weight: duration * 0.05,
            after: vec![],
            reads: vec![],
        });
    }
    // Text subtitles become WebVTT renditions of the HLS package (bitmap ones cannot).
    let subtitle_tracks: Vec<(usize, Option<String>)> = info
        .streams
        .iter()
        .filter(|s| s.kind == "subtitle")
        .enumerate()
        .filter(|(_, s)| TEXT_SUBTITLES.contains(&s.codec.as_str()))
        .map(|(k, s)| (k, s.language.clone()))
        .collect();
    let with_subtitles = spec.subtitles && spec.format.hls() && !renditions.is_empty() && !subtitle_tracks.is_empty();
    if with_subtitles {
        let mut p = Map::new();
        p.insert("input".into(), json!(input));
        p.insert("subtitle_tracks".into(), json!(subtitle_tracks.iter().map(|(k, _)| k).collect::<Vec<_>>()));
        out.push(PlannedChild {
            label: "subtitles".into(),
            stage: Stage::Subtitles,
            params: p,
            weight: duration * 0.01,
            after: vec![],
            reads: vec![],
        });
    }
    if !renditions.is_empty() {
        let mut p = Map::new();
        let subtitles: Vec<Value> = subtitle_tracks
            .iter()
            .filter(|_| with_subtitles)
            .map(|(k, lang)| json!({"name": format!("subs_{k}"), "language": lang}))
            .collect();
        p.insert(
            "packaging".into(),
            json!({"format": spec.format, "segment_seconds": spec.segment_seconds, "audio_tracks": audio_tracks,
                   "subtitles": subtitles}),
        );
        let mut reads: Vec<(String, String)> =
            renditions.iter().chain(&audio_labels).map(|l| (l.clone(), format!("{l}.mp4"))).collect();
        let mut after: Vec<String> = renditions.iter().chain(&audio_labels).cloned().collect();
        if with_subtitles {
            reads.extend(subtitle_tracks.iter().map(|(k, _)| ("subtitles".to_string(), format!("subs_{k}.vtt"))));
            after.push("subtitles".into());
        }
        out.push(PlannedChild {
            label: "package".into(),
            stage: Stage::Package,
            params: p,
            weight: duration * 0.02 * reads.len() as f64,
            after,
            reads,
        });
    }
    Ok(out)
}

/// Subtitle codecs that convert to WebVTT (text, not pictures).
pub const TEXT_SUBTITLES: &[&str] = &["subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::media::StreamInfo;

    fn source(w: u32, h: u32, fps: f64, pix: &str, audio: usize) -> InputInfo {
        let mut streams = vec![StreamInfo {
            kind: "video".into(),
            codec: "h264".into(),
            width: Some(w),
            height: Some(h),
            frame_rate: Some(fps),
            pix_fmt: Some(pix.into()),
            ..Default::default()
        }];
        for _ in 0..audio {
            streams.push(StreamInfo { kind: "audio".into(), codec: "aac".into(), ..Default::default() });
        }
        InputInfo { format: "mov".into(), duration_seconds: Some(6.0), streams, ..Default::default() }
    }

    fn ladder(rungs: &[(u32, u32)]) -> PackageSpec {
        let l: Vec<Value> = rungs.iter().map(|(h, b)| json!({"height": h, "bitrate": format!("{b}k")})).collect();
        PackageSpec::parse(&json!({"format": "both", "segment_seconds": 2, "ladder": l})).unwrap()
    }

    #[test]
    fn parse_bounds_and_defaults() {
        let p = ladder(&[(720, 2500), (360, 800)]);
        assert_eq!(p.format, PackageFormat::Both);
        assert_eq!(p.audio, vec![AudioRung { bitrate_kbps: 128, channels: None }]);
        for (bad, why) in [
            (json!({"ladder": []}), "needs a ladder"),
            (json!({"ladder": [{"height": 361, "bitrate": "1M"}]}), "even number"),
            (json!({"ladder": [{"height": 360, "bitrate": "1M", "codec": "mpeg2"}]}), "h264 or hevc"),
            (json!({"ladder": [{"height": 360}]}), "bitrate"),
            (json!({"format": "smooth", "ladder": [{"height": 360, "bitrate": 800}]}), "hls, dash or both"),
            (json!({"segment_seconds": 0, "ladder": [{"height": 360, "bitrate": 800}]}), "segment_seconds"),
            (json!({"ladder": [{"height": 360, "bitrate": 800, "x": 1}]}), "no field 'x'"),
        ] {
            let e = PackageSpec::parse(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let many: Vec<Value> = (0..11).map(|i| json!({"height": 200 + 2 * i, "bitrate": 500})).collect();
        assert!(PackageSpec::parse(&json!({"ladder": many})).unwrap_err().contains("at most 10"));
    }

    #[test]
    fn plan_drops_rungs_above_the_source_and_aligns_keyframes() {
        let plan =
            plan(&ladder(&[(720, 2500), (360, 800), (240, 400)]), "in.mp4", &source(640, 360, 25.0, "yuv420p", 1))
                .unwrap();
        let labels: Vec<&str> = plan.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["360p", "240p", "audio_128k", "package"]);
        assert_eq!(plan[0].params["resolution"], "640x360");
        assert_eq!(plan[1].params["resolution"], "426x240");
        assert_eq!(plan[0].params["keyframe_seconds"], 2.0);
        assert_eq!(plan[0].params["fps"], 25);
        assert_eq!(plan[0].params["pix_fmt"], "yuv420p");
        let pkg = plan.last().unwrap();
        assert_eq!(pkg.after, ["360p", "240p", "audio_128k"]);
        assert_eq!(
            pkg.params["packaging"],
            json!({"format": "both", "segment_seconds": 2.0, "audio_tracks": 1, "subtitles": []})
        );
        let spec = crate::domain::params::parse_job_spec(&pkg.params, crate::domain::params::Engine::Auto).unwrap();
        assert_eq!(spec.packaging.unwrap().audio_tracks, 1);
        assert_eq!(pkg.reads[0], ("360p".to_string(), "360p.mp4".to_string()));
        assert!(plan[0].weight > plan[1].weight, "bigger rungs weigh more");
    }

    #[test]
    fn plan_keeps_10_bit_for_hevc_and_caps_the_rate() {
        let mut spec = ladder(&[(360, 800)]);
        spec.ladder[0].codec = "hevc".into();
        spec.max_fps = Some(30.0);
        let p = plan(&spec, "in.mkv", &source(640, 360, 60.0, "yuv420p10le", 0)).unwrap();
        assert_eq!(p[0].params["pix_fmt"], "yuv420p10le");
        assert_eq!(p[0].params["fps"], 30);
        assert_eq!(p.len(), 2, "no audio child for a silent source");
        let h264 = plan(&ladder(&[(360, 800)]), "in.mkv", &source(640, 360, 60.0, "yuv420p10le", 0)).unwrap();
        assert_eq!(h264[0].params["pix_fmt"], "yuv420p");
        // A source below every rung gets one rendition at its own height.
        let small = plan(&ladder(&[(720, 2500), (480, 1200)]), "in", &source(320, 180, 25.0, "yuv420p", 0)).unwrap();
        assert_eq!(small[0].params["resolution"], "320x180");
    }

    #[test]
    fn subtitles_become_webvtt_renditions() {
        let mut src = source(640, 360, 25.0, "yuv420p", 1);
        src.streams.push(StreamInfo {
            kind: "subtitle".into(),
            codec: "mov_text".into(),
            language: Some("eng".into()),
            ..Default::default()
        });
        src.streams.push(StreamInfo {
            kind: "subtitle".into(),
            codec: "hdmv_pgs_subtitle".into(),
            ..Default::default()
        });
        let plan = plan(&ladder(&[(360, 800)]), "in.mp4", &src).unwrap();
        let subs = plan.iter().find(|c| c.stage == Stage::Subtitles).expect("a subtitles step");
        assert_eq!(subs.params["subtitle_tracks"], json!([0]), "the bitmap track is left out");
        let pkg = plan.last().unwrap();
        assert!(pkg.after.contains(&"subtitles".to_string()));
        assert_eq!(pkg.params["packaging"]["subtitles"], json!([{"name": "subs_0", "language": "eng"}]));
        let mut off = ladder(&[(360, 800)]);
        off.subtitles = false;
        assert!(super::plan(&off, "in.mp4", &src).unwrap().iter().all(|c| c.stage != Stage::Subtitles));
    }
}
