//! The parameters of ladder and graph steps (renditions, packaging, thumbnails,
//! subtitles), parsed and bounded for `params::parse_job_spec`; the master sets most of
//! them on the children it plans, a client may set the encode ones.

use super::params::{ParamError, err, parse_bitrate_kbps, static_str};
use serde_json::{Map, Value};

/// Most inputs of a joining step (a stitch reads every chunk and the audio).
pub const MAX_INPUTS: usize = super::chunking::MAX_CHUNKS + 8;

/// Which audio tracks of a file input an encode keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioSelect {
    #[default]
    All,
    First,
    None,
}

/// What the packaging step of a ladder does (set by the master).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Packaging {
    pub format: super::ladder::PackageFormat,
    pub segment_seconds: f64,
    #[serde(default)]
    pub audio_tracks: usize,
    #[serde(default)]
    pub subtitles: Vec<super::packaging::SubtitleTrack>,
}

/// The parameters of ladders and graphs (renditions, packaging, thumbnails).
pub(super) struct GraphFields {
    pub(super) max_bitrate_kbps: Option<u32>,
    pub(super) keyframe_seconds: Option<f64>,
    pub(super) pix_fmt: Option<&'static str>,
    pub(super) audio: AudioSelect,
    pub(super) audio_bitrate_kbps: Option<u32>,
    pub(super) audio_channels: Option<u32>,
    pub(super) stage: Option<super::ladder::Stage>,
    pub(super) package: Option<super::ladder::PackageSpec>,
    pub(super) packaging: Option<Packaging>,
    pub(super) inputs: Vec<String>,
    pub(super) thumbnails: Option<super::ladder::Thumbnails>,
    pub(super) subtitle_tracks: Vec<usize>,
    pub(super) chunking: Option<super::chunking::ChunkingSpec>,
    pub(super) start_seconds: Option<f64>,
    pub(super) crf: Option<u32>,
    pub(super) probe_keyframes: bool,
}

type TextParam<'a> = &'a dyn Fn(&str) -> Result<Option<String>, ParamError>;
type NumberParam<'a> = &'a dyn Fn(&str, f64, f64) -> Result<Option<f64>, ParamError>;

pub(super) fn graph_fields(
    params: &Map<String, Value>,
    text: TextParam,
    num: NumberParam,
) -> Result<GraphFields, ParamError> {
    let rate = |k: &str| -> Result<Option<u32>, ParamError> {
        match text(k)?.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(b) => parse_bitrate_kbps(&b)
                .map(Some)
                .ok_or_else(|| ParamError(format!("invalid {k} '{b}'; write e.g. 2500k or 5M"))),
        }
    };
    let pix_fmt = match text("pix_fmt")?.as_deref() {
        None | Some("") => None,
        Some(p) => Some(
            static_str(&["yuv420p", "yuv420p10le"], p)
                .ok_or_else(|| ParamError(format!("invalid pix_fmt '{p}'; valid values: yuv420p, yuv420p10le")))?,
        ),
    };
    let audio = match text("audio")?.as_deref() {
        None | Some("") | Some("all") => AudioSelect::All,
        Some("first") => AudioSelect::First,
        Some("none") => AudioSelect::None,
        Some(a) => return err(format!("invalid audio '{a}'; valid values: all, first, none")),
    };
    let stage = match text("stage")?.as_deref() {
        None | Some("") | Some("encode") => None,
        Some(s) => Some(super::ladder::Stage::parse(s).ok_or_else(|| ParamError(format!("invalid stage '{s}'")))?),
    };
    let package = match params.get("package") {
        None | Some(Value::Null) => None,
        Some(v) => Some(super::ladder::PackageSpec::parse(v).map_err(ParamError)?),
    };
    let packaging = match params.get("packaging") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<Packaging>(v.clone())
                .map_err(|e| ParamError(format!("invalid packaging: {e}")))?,
        ),
    };
    let inputs = match params.get("inputs") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) if a.len() <= MAX_INPUTS => a
            .iter()
            .map(|v| match v.as_str().map(super::media::InputRef::parse) {
                Some(Ok(super::media::InputRef::Artifact { .. })) => Ok(v.as_str().unwrap_or_default().to_string()),
                _ => err("parameter 'inputs' holds artifact:// references only"),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return err(format!("parameter 'inputs' must be a list of at most {MAX_INPUTS} artifact:// references"));
        }
    };
    let thumbnails = match params.get("thumbnails") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<super::ladder::Thumbnails>(v.clone())
                .map_err(|e| ParamError(format!("invalid thumbnails: {e}")))?,
        ),
    };
    let subtitle_tracks = match params.get("subtitle_tracks") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) if a.len() <= 32 => a
            .iter()
            .map(|v| v.as_u64().filter(|k| *k < 64).map(|k| k as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ParamError("parameter 'subtitle_tracks' holds track numbers (0–63)".into()))?,
        Some(_) => return err("parameter 'subtitle_tracks' must be a list of at most 32 track numbers"),
    };
    let chunking = match params.get("chunking") {
        None => None,
        Some(v) => super::chunking::ChunkingSpec::parse(v).map_err(ParamError)?,
    };
    let probe_keyframes = match params.get("probe_keyframes") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err("parameter 'probe_keyframes' must be true or false"),
    };
    Ok(GraphFields {
        chunking,
        start_seconds: num("start_seconds", 0.0, super::params::MAX_DURATION_SECONDS)?.filter(|s| *s > 0.0),
        crf: num("crf", 0.0, 63.0)?.map(|c| c.round() as u32),
        probe_keyframes,
        subtitle_tracks,
        max_bitrate_kbps: rate("max_bitrate")?,
        keyframe_seconds: num("keyframe_seconds", 0.1, 60.0)?,
        pix_fmt,
        audio,
        audio_bitrate_kbps: rate("audio_bitrate")?,
        audio_channels: num("audio_channels", 1.0, 8.0)?.map(|c| c as u32),
        stage,
        package,
        packaging,
        inputs,
        thumbnails,
    })
}
