//! The seed's lavfi inputs (`input: "testsrc=duration=10:size=1280x720:rate=30"`),
//! parsed into the synthetic input of an encode. Only the sources of an allow-list and
//! their documented options are accepted, each value checked; the filter text a job
//! sent never reaches an argv (the argv writes its own from the parsed values).

use super::params::{ParamError, parse_resolution};

/// The video pattern of a synthetic input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VideoPattern {
    Testsrc,
    #[default]
    Testsrc2,
    Smptebars,
    Smptehdbars,
    /// A flat colour: a name (`red`, `DarkBlue`) or `0xRRGGBB`.
    Color(String),
}

/// The audio of a synthetic input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTone {
    Sine { frequency: u32 },
    Silence,
}

impl Default for AudioTone {
    fn default() -> Self {
        AudioTone::Sine { frequency: 440 }
    }
}

/// What a lavfi input asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LavfiSource {
    pub video: VideoPattern,
    pub audio: AudioTone,
    pub size: Option<(u32, u32)>,
    pub rate: Option<u32>,
    pub duration: Option<f64>,
}

/// Sources a job may name.
pub const SOURCES: &[&str] = &["testsrc", "testsrc2", "smptebars", "smptehdbars", "color", "sine", "anullsrc"];

fn bad(msg: String) -> ParamError {
    ParamError(msg)
}

fn number(source: &str, key: &str, v: &str, min: f64, max: f64) -> Result<f64, ParamError> {
    // A rate may be written as a fraction (30000/1001).
    let n = match v.split_once('/') {
        Some((a, b)) => a.parse::<f64>().ok().zip(b.parse::<f64>().ok()).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b),
        None => v.trim_end_matches('s').parse::<f64>().ok(),
    };
    n.filter(|n| n.is_finite() && (min..=max).contains(n))
        .ok_or_else(|| bad(format!("input '{source}': option '{key}' must be a number from {min} to {max}, not '{v}'")))
}

fn colour(v: &str) -> Result<String, ParamError> {
    let hex = v.strip_prefix("0x").or_else(|| v.strip_prefix('#'));
    let ok = match hex {
        Some(h) => (h.len() == 6 || h.len() == 8) && h.chars().all(|c| c.is_ascii_hexdigit()),
        None => !v.is_empty() && v.len() <= 32 && v.chars().all(|c| c.is_ascii_alphabetic()),
    };
    if ok {
        Ok(hex.map(|h| format!("0x{h}")).unwrap_or_else(|| v.to_string()))
    } else {
        Err(bad(format!("input 'color': '{v}' is not a colour name or 0xRRGGBB")))
    }
}

/// `Some` when `input` names an allowed lavfi source (`name` or `name=k=v:k=v`), with
/// its options checked; `None` when it does not look like one (a file path).
pub fn parse_source(input: &str) -> Option<Result<LavfiSource, ParamError>> {
    let (name, options) = input.split_once('=').unwrap_or((input, ""));
    if !SOURCES.contains(&name) {
        return None;
    }
    Some(parse_options(name, options))
}

fn parse_options(name: &str, options: &str) -> Result<LavfiSource, ParamError> {
    let mut src = LavfiSource {
        video: match name {
            "testsrc" => VideoPattern::Testsrc,
            "smptebars" => VideoPattern::Smptebars,
            "smptehdbars" => VideoPattern::Smptehdbars,
            "color" => VideoPattern::Color("black".into()),
            _ => VideoPattern::Testsrc2,
        },
        audio: if name == "anullsrc" { AudioTone::Silence } else { AudioTone::default() },
        ..LavfiSource::default()
    };
    let audio_only = matches!(name, "sine" | "anullsrc");
    for opt in options.split(':').filter(|o| !o.is_empty()) {
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| bad(format!("input '{name}': option '{opt}' must be written key=value")))?;
        match (key, audio_only) {
            ("duration" | "d", _) => {
                src.duration = Some(number(name, key, value, 0.04, super::params::MAX_DURATION_SECONDS)?)
            }
            ("size" | "s", false) => {
                src.size = Some(parse_resolution(value).ok_or_else(|| {
                    bad(format!("input '{name}': size '{value}' must be WxH with even sides up to 7680x4320"))
                })?)
            }
            ("rate" | "r", false) => src.rate = Some(number(name, key, value, 1.0, 240.0)?.round() as u32),
            ("color" | "c", false) if name == "color" => src.video = VideoPattern::Color(colour(value)?),
            ("frequency" | "f", true) if name == "sine" => {
                src.audio = AudioTone::Sine { frequency: number(name, key, value, 1.0, 20_000.0)?.round() as u32 }
            }
            // The encode resamples to 48 kHz stereo whatever the source says.
            ("sample_rate" | "r", true) => {
                number(name, key, value, 8_000.0, 192_000.0)?;
            }
            ("channel_layout" | "cl", true) if matches!(value, "mono" | "stereo") => {}
            _ => return Err(bad(format!("input '{name}': option '{key}' is not supported (value '{value}')"))),
        }
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sources_parse_into_checked_values() {
        let ok = [
            (
                "testsrc=duration=10:size=1280x720:rate=30",
                LavfiSource {
                    video: VideoPattern::Testsrc,
                    size: Some((1280, 720)),
                    rate: Some(30),
                    duration: Some(10.0),
                    ..Default::default()
                },
            ),
            ("testsrc2", LavfiSource::default()),
            (
                "smptehdbars=s=640x360:r=30000/1001:d=2",
                LavfiSource {
                    video: VideoPattern::Smptehdbars,
                    size: Some((640, 360)),
                    rate: Some(30),
                    duration: Some(2.0),
                    ..Default::default()
                },
            ),
            (
                "color=c=red:s=320x240",
                LavfiSource { video: VideoPattern::Color("red".into()), size: Some((320, 240)), ..Default::default() },
            ),
            ("color=c=0x00FF00", LavfiSource { video: VideoPattern::Color("0x00FF00".into()), ..Default::default() }),
            (
                "sine=frequency=1000:sample_rate=44100:duration=3",
                LavfiSource { audio: AudioTone::Sine { frequency: 1000 }, duration: Some(3.0), ..Default::default() },
            ),
            ("anullsrc=r=48000:cl=stereo", LavfiSource { audio: AudioTone::Silence, ..Default::default() }),
        ];
        for (input, want) in ok {
            assert_eq!(parse_source(input), Some(Ok(want)), "{input}");
        }
    }

    #[test]
    fn anything_else_is_refused_or_left_to_the_path_rules() {
        // Not a lavfi source: a path, checked elsewhere.
        for input in ["in.mp4", "movie=/etc/passwd", "-f lavfi -i testsrc", "amovie=x", "testsrc.mp4"] {
            assert_eq!(parse_source(input), None, "{input}");
        }
        // An allowed source with options outside the allow-list.
        for input in [
            "testsrc=size=99999x99999",
            "testsrc=rate=1000",
            "testsrc=duration=-1",
            "testsrc=duration=1e9",
            "testsrc=filename=/etc/passwd",
            "testsrc=size=640x360,drawtext=text=x",
            "color=c=red;ls",
            "color=c=0xZZZZZZ",
            "sine=frequency=99999",
            "sine=size=640x360",
            "testsrc=frequency=440",
            "testsrc=rate",
        ] {
            assert!(matches!(parse_source(input), Some(Err(_))), "{input}");
        }
    }
}
