//! Job templates, pure: the built-in ones shipped with the binary, the rules for a
//! template's name, and how a job's own parameters override a template's.

use serde_json::{Map, Value, json};

pub const NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 500;
/// Most stored templates (all versions of all names).
pub const MAX_STORED: i64 = 10_000;

/// (name, description, parameters) of the templates every master has.
pub fn builtins() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "hls-ladder",
            "HLS ladder after Apple's HLS authoring specification: H.264 rungs from 1080p to 234p, 6 s fMP4 segments, AAC audio",
            json!({"package": {"format": "hls", "segment_seconds": 6, "ladder": [
                {"height": 1080, "bitrate": "6000k", "max_bitrate": "7800k"},
                {"height": 720, "bitrate": "3000k", "max_bitrate": "4500k"},
                {"height": 540, "bitrate": "2000k", "max_bitrate": "2600k"},
                {"height": 360, "bitrate": "730k", "max_bitrate": "1100k"},
                {"height": 234, "bitrate": "145k", "max_bitrate": "220k"}
            ], "audio": [{"bitrate": "128k"}]}}),
        ),
        (
            "dash-ladder",
            "DASH ladder: H.264 rungs from 1080p to 360p, 4 s segments, AAC audio",
            json!({"package": {"format": "dash", "segment_seconds": 4, "ladder": [
                {"height": 1080, "bitrate": "4500k"},
                {"height": 720, "bitrate": "2500k"},
                {"height": 480, "bitrate": "1200k"},
                {"height": 360, "bitrate": "700k"}
            ], "audio": [{"bitrate": "128k"}]}}),
        ),
        (
            "mp4-1080p",
            "One 1080p H.264 MP4 at 5 Mbit/s",
            json!({"codec": "h264", "resolution": "1920x1080", "bitrate": "5000k", "preset": "medium"}),
        ),
        (
            "hevc-mp4",
            "HEVC MP4 at the source's size; a 10-bit source stays 10-bit",
            json!({"codec": "h265", "bitrate": "3000k", "preset": "fast"}),
        ),
        (
            "thumbnails",
            "JPEG thumbnails every 10 s and a sprite sheet with its WebVTT index",
            json!({"package": {"thumbnails": {"every_seconds": 10, "sprite": true}}}),
        ),
    ]
}

pub fn builtin(name: &str) -> Option<(&'static str, Value)> {
    builtins().into_iter().find(|(n, _, _)| *n == name).map(|(_, d, v)| (d, v))
}

pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(format!("template name must be 1 to {NAME_MAX} lowercase letters, digits, '-' or '_'"))
    }
}

/// A job's parameters from a template's and its own: its own win; a `package` object
/// is merged field by field, so a job can change one field of a template's package.
pub fn apply(template: &Map<String, Value>, own: Map<String, Value>) -> Map<String, Value> {
    let mut out = template.clone();
    for (k, v) in own {
        match (out.get_mut(&k), v) {
            (Some(Value::Object(base)), Value::Object(over)) if k == "package" => {
                for (pk, pv) in over {
                    base.insert(pk, pv);
                }
            }
            (_, v) => {
                out.insert(k, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_jobs() {
        for (name, _, params) in builtins() {
            check_name(name).unwrap();
            let mut p = params.as_object().unwrap().clone();
            p.insert("input".into(), "in.mp4".into());
            crate::domain::params::parse_job_spec(&p, crate::domain::params::Engine::Auto)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn own_parameters_override() {
        let t = json!({"codec": "h264", "package": {"format": "hls", "segment_seconds": 6}});
        let own = json!({"codec": "h265", "package": {"segment_seconds": 2}, "input": "a.mp4"});
        let got = apply(t.as_object().unwrap(), own.as_object().unwrap().clone());
        assert_eq!(got["codec"], "h265");
        assert_eq!(got["package"], json!({"format": "hls", "segment_seconds": 2}));
        assert_eq!(got["input"], "a.mp4");
        assert!(check_name("Bad Name").is_err() && check_name("").is_err() && check_name("ok-1").is_ok());
    }
}
