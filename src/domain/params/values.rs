//! The checks of single parameter values: types (text, bounded numbers, booleans),
//! bitrates and resolutions as clients spell them, input paths, output names and RTMP
//! URLs (no shell metacharacters, no `..`, allowed extensions).

use super::{ParamError, err};
use serde_json::Value;

const OUTPUT_EXTENSIONS: &[&str] = &["mp4", "mkv", "webm", "mov", "ts", "flv", "m4v", "ivf"];

/// Characters refused in paths and URLs. No shell ever sees them, but a job that
/// carries them is hostile or broken, and either way it is better refused at the door.
const SHELL_META: &[char] = &[';', '|', '&', '$', '`', '<', '>', '"', '\'', '\\', '*', '?', '!', '{', '}'];

pub(super) fn as_text(key: &str, v: &Value) -> Result<String, ParamError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => err(format!("parameter '{key}' must be a string or a number")),
    }
}

pub(super) fn as_number(key: &str, v: &Value, min: f64, max: f64) -> Result<f64, ParamError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n >= min && n <= max => Ok(n),
        Some(n) => err(format!("parameter '{key}' = {n} is outside {min}..={max}")),
        None => err(format!("parameter '{key}' must be a number")),
    }
}

pub(super) fn as_bool(key: &str, v: &Value) -> Result<bool, ParamError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "1" => Ok(true),
        Value::String(s) if s == "false" || s == "0" => Ok(false),
        _ => err(format!("parameter '{key}' must be true or false")),
    }
}

/// `5000k`, `5M`, `2500000` or a number of bits per second.
pub fn parse_bitrate_kbps(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1.0),
        (i, 'm' | 'M') => (&s[..i], 1000.0),
        _ => (s, 0.001),
    };
    let v: f64 = num.parse().ok()?;
    let kbps = v * mult;
    (kbps.is_finite() && (16.0..=1_000_000.0).contains(&kbps)).then_some(kbps.round() as u32)
}

pub fn parse_resolution(s: &str) -> Option<(u32, u32)> {
    let named = match s.to_ascii_lowercase().as_str() {
        "240p" => Some((426, 240)),
        "360p" => Some((640, 360)),
        "480p" => Some((854, 480)),
        "720p" => Some((1280, 720)),
        "1080p" => Some((1920, 1080)),
        "1440p" => Some((2560, 1440)),
        "2160p" | "4k" => Some((3840, 2160)),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h): (u32, u32) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    ((16..=7680).contains(&w) && (16..=4320).contains(&h) && w % 2 == 0 && h % 2 == 0).then_some((w, h))
}

/// An input path: a plain file path, never a protocol URL, an option or a parent escape.
pub fn check_input_path(p: &str) -> Result<(), ParamError> {
    if p.is_empty() || p.len() > 4096 {
        return err("parameter 'input' must be a file path of 1 to 4096 characters");
    }
    if p.chars().any(|c| c.is_control()) {
        return err("parameter 'input' contains control characters");
    }
    if p.starts_with('-') {
        return err("parameter 'input' must not start with '-'");
    }
    // `file:`, `http:`, `concat:`, `subfile,,` … would let ffmpeg read anything.
    if let Some(colon) = p.find(':')
        && !p[..colon].contains('/')
    {
        return err("parameter 'input' must be a file path, not a protocol URL");
    }
    if p.chars().any(|c| SHELL_META.contains(&c)) || p.split('/').any(|c| c == "..") {
        return err(format!(
            "parameter 'input' must not contain '..' or any of {}",
            SHELL_META.iter().collect::<String>()
        ));
    }
    Ok(())
}

/// An output: a bare file name with a known container extension, written inside the job's
/// attempt directory.
pub fn check_output_name(p: &str) -> Result<(), ParamError> {
    let ok_chars = !p.is_empty()
        && p.len() <= 200
        && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !p.starts_with(['-', '.']);
    let ext_ok = p.rsplit_once('.').is_some_and(|(_, e)| OUTPUT_EXTENSIONS.contains(&e));
    if ok_chars && ext_ok {
        Ok(())
    } else {
        err(format!(
            "parameter 'output' must be a plain file name (letters, digits, '.', '_', '-') ending in one of: {}",
            OUTPUT_EXTENSIONS.join(", ")
        ))
    }
}

pub(super) fn check_rtmp_url(u: &str) -> Result<(), ParamError> {
    let ok = (u.starts_with("rtmp://") || u.starts_with("rtmps://"))
        && u.len() <= 1024
        && !u.chars().any(|c| c.is_whitespace() || c.is_control() || SHELL_META.contains(&c));
    if ok { Ok(()) } else { err("parameter 'rtmp_url' must be an rtmp:// or rtmps:// URL without spaces") }
}
