//! Bounds on everything the master stores, in one place (the README's Security section
//! lists them). Text that reaches the database never carries NUL or other control
//! characters, so one bad value can never fail a group commit it shares with others
//! (PostgreSQL refuses NUL in text), and no client can grow the master's memory or
//! slow its listings with oversized fields.

use crate::wire::{JobResult, NodeRegistration};
use serde_json::{Map, Value};

/// Job submission.
pub const SCENARIO_MAX: usize = 256;
pub const CONFIDENCE_MAX: usize = 32;
/// Any one string inside `parameters` (paths and URLs included).
pub const PARAMETER_TEXT_MAX: usize = 4096;
/// A number written as text inside `parameters`.
pub const PARAMETER_NUMBER_TEXT_MAX: usize = 32;
/// `parameters` serialized.
pub const PARAMETERS_JSON_MAX: usize = 16 * 1024;

/// Node registration and heartbeats.
pub const NODE_NAME_MAX: usize = 128;
pub const NODE_ADDRESS_MAX: usize = 256;
pub const NODE_TYPE_MAX: usize = 64;
pub const CPU_MODEL_MAX: usize = 256;
pub const GPU_TYPE_MAX: usize = 128;
pub const VERSION_MAX: usize = 256;
/// Entries of `gpu_capabilities`, `encoders`, `gpus` and `labels`.
pub const NODE_LIST_MAX: usize = 64;
/// One capability, encoder or label key.
pub const NODE_ITEM_MAX: usize = 64;
/// One label value (serialized).
pub const LABEL_VALUE_MAX: usize = 256;

/// Results.
pub const RESULT_ERROR_MAX: usize = 4096;
pub const RESULT_LOGS_MAX: usize = 64 * 1024;
/// `metrics` (and `analyzer_output`) serialized.
pub const RESULT_METRICS_MAX: usize = 16 * 1024;
/// A transition's stored reason.
pub const EVENT_REASON_MAX: usize = 1024;

/// A field that failed its bound, phrased for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_err<T>(field: &str, message: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError { field: field.to_string(), message: message.into() })
}

/// A single-line text field: at most `max` bytes and no control characters (NUL
/// included).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return field_err(field, format!("'{field}' is longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return field_err(field, format!("'{field}' contains control characters (NUL, newlines, escapes…)"));
    }
    Ok(())
}

/// Multi-line text from a worker (errors, logs): NUL and other control characters
/// except newline and tab removed, and at most `max` bytes kept — the head for an
/// error (its first line says what happened), the tail for a log (its end says how it
/// ended). Cut on a character boundary.
pub fn clean_multiline(text: &str, max: usize, keep_tail: bool) -> String {
    let cleaned: String = text.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).collect();
    if cleaned.len() <= max {
        return cleaned;
    }
    if keep_tail {
        let mut start = cleaned.len() - max;
        while !cleaned.is_char_boundary(start) {
            start += 1;
        }
        cleaned[start..].to_string()
    } else {
        let mut end = max;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned[..end].to_string()
    }
}

/// Log lines one progress report may carry, and the length of each.
pub const LOG_LINES_PER_REPORT: usize = 200;
pub const LOG_LINE_MAX: usize = 1024;

/// A report's log lines, bounded in number and length (the newest kept), credentials
/// in URLs redacted.
pub fn bound_log_lines(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > LOG_LINES_PER_REPORT {
        lines.drain(..lines.len() - LOG_LINES_PER_REPORT);
    }
    lines.into_iter().map(|l| super::redact::redact_urls(&clean_multiline(&l, LOG_LINE_MAX, false))).collect()
}

/// Bound a transition reason before it is stored.
pub fn event_reason(reason: &str) -> String {
    clean_multiline(reason, EVENT_REASON_MAX, false).replace(['\n', '\t'], " ")
}

/// A node's registration: every string and list bounded, no control characters.
pub fn check_registration(r: &NodeRegistration) -> Result<(), FieldError> {
    for (field, value, max) in [
        ("name", r.name.as_deref().unwrap_or(""), NODE_NAME_MAX),
        ("address", r.address.as_str(), NODE_ADDRESS_MAX),
        ("type", r.node_type.as_deref().unwrap_or(""), NODE_TYPE_MAX),
        ("cpu_model", r.cpu_model.as_str(), CPU_MODEL_MAX),
        ("gpu_type", r.gpu_type.as_deref().unwrap_or(""), GPU_TYPE_MAX),
        ("ffmpeg_version", r.ffmpeg_version.as_deref().unwrap_or(""), VERSION_MAX),
        ("gstreamer_version", r.gstreamer_version.as_deref().unwrap_or(""), VERSION_MAX),
        ("rtmp_base", r.rtmp_base.as_deref().unwrap_or(""), VERSION_MAX),
    ] {
        check_text(field, value, max)?;
    }
    check_list("gpu_capabilities", &r.gpu_capabilities)?;
    check_list("encoders", r.encoders.as_deref().unwrap_or(&[]))?;
    if let Some(i) = r.heartbeat_interval_seconds {
        super::node::heartbeat_interval_ms(i)
            .map_err(|e| FieldError { field: "heartbeat_interval_seconds".into(), message: e })?;
    }
    check_gpus(&r.gpus)?;
    if r.labels.len() > NODE_LIST_MAX {
        return field_err("labels", format!("at most {NODE_LIST_MAX} labels"));
    }
    for (k, v) in &r.labels {
        check_text("labels", k, NODE_ITEM_MAX)?;
        let len = match v {
            Value::String(s) => {
                check_text(&format!("labels.{k}"), s, LABEL_VALUE_MAX)?;
                s.len()
            }
            other => other.to_string().len(),
        };
        if len > LABEL_VALUE_MAX {
            return field_err("labels", format!("label '{k}' is longer than {LABEL_VALUE_MAX} bytes"));
        }
    }
    Ok(())
}

pub fn check_gpus(gpus: &[crate::wire::GpuInfo]) -> Result<(), FieldError> {
    if gpus.len() > NODE_LIST_MAX {
        return field_err("gpus", format!("at most {NODE_LIST_MAX} GPUs"));
    }
    for g in gpus {
        check_text("gpus.name", &g.name, GPU_TYPE_MAX)?;
    }
    Ok(())
}

fn check_list(field: &str, items: &[String]) -> Result<(), FieldError> {
    if items.len() > NODE_LIST_MAX {
        return field_err(field, format!("'{field}' holds at most {NODE_LIST_MAX} entries"));
    }
    for i in items {
        check_text(field, i, NODE_ITEM_MAX)?;
    }
    Ok(())
}

fn in_range(field: &str, v: Option<f64>, min: f64, max: f64) -> Result<(), FieldError> {
    match v {
        Some(x) if !x.is_finite() || x < min || x > max => {
            field_err(field, format!("'{field}' must be between {min} and {max}"))
        }
        _ => Ok(()),
    }
}

/// Every number in a metrics object is finite and non-negative (counts, rates, sizes
/// and scores all are), and the whole is bounded.
fn check_metrics(field: &str, m: Option<&Map<String, Value>>) -> Result<(), FieldError> {
    let Some(m) = m else { return Ok(()) };
    if serde_json::to_vec(m).map_or(usize::MAX, |b| b.len()) > RESULT_METRICS_MAX {
        return field_err(field, format!("'{field}' is larger than {RESULT_METRICS_MAX} bytes"));
    }
    fn walk(field: &str, v: &Value) -> Result<(), FieldError> {
        match v {
            Value::Number(n) if n.as_f64().is_none_or(|x| !x.is_finite() || x < 0.0) => {
                field_err(field, format!("'{field}' holds a negative or non-finite number ({n})"))
            }
            Value::String(s) if s.contains('\0') => field_err(field, format!("'{field}' holds a NUL character")),
            Value::Array(a) => a.iter().try_for_each(|x| walk(field, x)),
            Value::Object(o) => o.values().try_for_each(|x| walk(field, x)),
            _ => Ok(()),
        }
    }
    m.values().try_for_each(|v| walk(field, v))
}

/// Most outputs one attempt may store (an HLS ladder's segments fit many times over).
pub const MAX_OUTPUTS_PER_JOB: usize = 10_000;

/// What a worker's ffprobe reported, bounded: a file with thousands of streams (or
/// megabytes of codec names) is not kept on the job.
pub fn check_input_info(i: &super::media::InputInfo) -> Result<(), FieldError> {
    if i.streams.len() > 64 {
        return field_err("input_info", "at most 64 streams");
    }
    check_text("input_info.format", &i.format, 256)?;
    for s in &i.streams {
        check_text("input_info.streams.kind", &s.kind, 32)?;
        check_text("input_info.streams.codec", &s.codec, 64)?;
        check_text("input_info.streams.pix_fmt", s.pix_fmt.as_deref().unwrap_or(""), 64)?;
    }
    if let Some(k) = &i.keyframes {
        if k.len() > super::chunking::MAX_KEYFRAMES {
            return field_err("input_info.keyframes", "at most 2000 keyframe times");
        }
        if k.iter().any(|t| !t.is_finite() || *t < 0.0) {
            return field_err("input_info.keyframes", "keyframe times are non-negative seconds");
        }
    }
    Ok(())
}

/// A worker's result: scores in range, sizes bounded; the error and logs are cleaned
/// (NUL removed, bounded) rather than refused, so a real encode's outcome is never
/// lost to a stray byte in ffmpeg's output.
pub fn check_result(r: &mut JobResult) -> Result<(), FieldError> {
    check_text("node_id", &r.node_id, 128)?;
    if let Some(reason) = &r.failure_reason
        && super::state::FailureReason::parse(reason).is_none()
    {
        return field_err(
            "failure_reason",
            format!("unknown failure_reason; valid values: {}", super::state::FailureReason::NAMES.join(", ")),
        );
    }
    in_range("qoe_score", r.qoe_score, 0.0, 100.0)?;
    in_range("vmaf_score", r.vmaf_score, 0.0, 100.0)?;
    in_range("progress", r.progress, 0.0, 100.0)?;
    in_range("efficiency_score", r.efficiency_score, 0.0, 1e12)?;
    in_range("energy_joules", r.energy_joules, 0.0, 1e15)?;
    check_metrics("metrics", r.metrics.as_ref())?;
    check_metrics("analyzer_output", r.analyzer_output.as_ref())?;
    if let Some(outputs) = &r.outputs {
        if outputs.len() > MAX_OUTPUTS_PER_JOB {
            return field_err("outputs", format!("at most {MAX_OUTPUTS_PER_JOB} outputs per attempt"));
        }
        for o in outputs {
            super::media::check_artifact_name(o).map_err(|m| FieldError { field: "outputs".into(), message: m })?;
        }
    }
    if let Some(c) = &r.completed_at {
        check_text("completed_at", c, 64)?;
    }
    // Seed agents do not redact: stream keys and URL credentials never get stored.
    r.error = r.error.as_deref().map(|e| clean_multiline(&super::redact::redact_urls(e), RESULT_ERROR_MAX, false));
    r.logs = r.logs.as_deref().map(|l| clean_multiline(&super::redact::redact_urls(l), RESULT_LOGS_MAX, true));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_checks() {
        let cases =
            [("ok", 8, true), ("toolongtext", 4, false), ("nul\0", 8, false), ("tab\t", 8, false), ("é", 2, true)];
        for (v, max, ok) in cases {
            assert_eq!(check_text("f", v, max).is_ok(), ok, "{v:?}");
        }
    }

    #[test]
    fn multiline_cleaning_keeps_head_or_tail_on_char_boundaries() {
        assert_eq!(clean_multiline("a\0b\nc\u{1b}[0m", 100, false), "ab\nc[0m");
        assert_eq!(clean_multiline("abcdef", 3, false), "abc");
        assert_eq!(clean_multiline("abcdef", 3, true), "def");
        assert_eq!(clean_multiline("ééé", 3, false), "é");
        assert_eq!(clean_multiline("ééé", 3, true), "é");
        assert!(event_reason(&"x".repeat(5000)).len() <= EVENT_REASON_MAX);
    }

    fn result(extra: Value) -> JobResult {
        let mut v = json!({"job_id": "j", "node_id": "n", "status": "completed"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn result_ranges() {
        let cases = [
            (json!({"qoe_score": 95.5}), true),
            (json!({"qoe_score": 1e308}), false),
            (json!({"vmaf_score": -1}), false),
            (json!({"energy_joules": 12.5}), true),
            (json!({"energy_joules": -3}), false),
            (json!({"metrics": {"frames": 240, "fps": 29.9}}), true),
            (json!({"metrics": {"frames": -5}}), false),
            (json!({"metrics": {"blob": "x".repeat(20_000)}}), false),
            (json!({"failure_reason": "runtime_error"}), true),
            (json!({"failure_reason": "because"}), false),
        ];
        for (extra, ok) in cases {
            assert_eq!(check_result(&mut result(extra.clone())).is_ok(), ok, "{extra}");
        }
        let mut r = result(json!({"error": format!("bad\0{}", "e".repeat(10_000)), "logs": "l\0og"}));
        check_result(&mut r).unwrap();
        assert_eq!(r.error.as_ref().unwrap().len(), RESULT_ERROR_MAX);
        assert!(!r.error.unwrap().contains('\0'));
        assert_eq!(r.logs.unwrap(), "log");
    }

    #[test]
    fn registration_bounds() {
        let ok: NodeRegistration = serde_json::from_value(json!({"address": "a", "cpu_model": "Xeon"})).unwrap();
        assert!(check_registration(&ok).is_ok());
        let bad = [
            json!({"cpu_model": "x".repeat(900_000)}),
            json!({"name": "evil\0"}),
            json!({"gpu_capabilities": vec!["h264_nvenc"; 100]}),
            json!({"labels": {"k": "v".repeat(300)}}),
            json!({"encoders": ["x".repeat(100)]}),
        ];
        for b in bad {
            let r: NodeRegistration = serde_json::from_value(b.clone()).unwrap();
            assert!(check_registration(&r).is_err(), "{b}");
        }
    }
}
