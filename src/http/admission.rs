//! What a submitted job may name, decided before it is stored: its parameters checked
//! and resolved (template, internal keys, unknown keys, bounds), and every outbound
//! target against the operator's allow-lists (`--input-allow` with the SSRF rule,
//! `--s3-allow`, `--rtmp-allow`).

use super::AppState;
use crate::actors::messages::ListRtmpDestinations;
use crate::db::DbError;
use crate::domain::params::{
    Engine, normalize_parameters, parse_job_spec, unknown_parameters, unknown_parameters_error,
};
use crate::error::{AppError, AppResult};

/// A job's parameters checked and resolved: internal keys refused, a template applied
/// under them, unknown keys listed (refused with `--strict-parameters`), values parsed
/// and bounded, numbers normalised, and every outbound target (RTMP, input URL,
/// bucket) checked against the operator's allow-lists.
pub async fn checked_parameters(
    state: &AppState,
    mut params: serde_json::Map<String, serde_json::Value>,
    template: Option<&str>,
    engine: Engine,
) -> AppResult<(crate::domain::params::JobSpec, serde_json::Map<String, serde_json::Value>, Vec<String>)> {
    if ["stage", "packaging", "inputs", "probe_keyframes"].iter().any(|k| params.contains_key(*k)) {
        return Err(AppError::bad_request(
            "invalid_parameter",
            "stage, packaging, inputs and probe_keyframes are set by the master for the steps of a graph",
        ));
    }
    if let Some(name) = template {
        params = super::templates::resolve(state, name, params).await?;
    }
    let ignored = unknown_parameters(&params);
    if state.strict_parameters && !ignored.is_empty() {
        return Err(AppError::bad_request("invalid_parameter", unknown_parameters_error(&ignored).0));
    }
    let spec = parse_job_spec(&params, engine).map_err(|e| AppError::bad_request("invalid_parameter", e.0))?;
    // Numbers are stored as numbers, not as whatever text carried them.
    let params = normalize_parameters(params);
    if let Some(url) = &spec.rtmp_url {
        check_rtmp_destination(state, url).await?;
    }
    if let Some(input) = &spec.input {
        check_input_source(state, input).await?;
    }
    if let Some(bucket) = spec.destination.bucket() {
        check_bucket_allowed(state, bucket)?;
    }
    Ok((spec, params, ignored))
}

/// A URL input must come from a host the operator allows (`--input-allow`), and an
/// internal address only from a host named exactly; an `artifact://` input must name
/// an output that is stored, an `upload://` input an upload that is.
async fn check_input_source(state: &AppState, input: &str) -> AppResult<()> {
    use crate::domain::media::{InputRef, check_input_host};
    let refuse = |m: String| AppError::bad_request("input_not_allowed", m);
    match InputRef::parse(input).map_err(|m| AppError::bad_request("invalid_parameter", m))? {
        InputRef::Local(_) => Ok(()),
        InputRef::Http { host, port, .. } => {
            // Refused by the patterns alone before any DNS query is made for it.
            crate::domain::allow::check_destination("input", &host, port, &state.input_allow, "--input-allow")
                .map_err(refuse)?;
            let addrs = crate::os::resolve_host(&host, port).await;
            check_input_host(&host, port, &addrs, &state.input_allow).map_err(refuse)
        }
        InputRef::S3 { bucket, .. } => check_bucket_allowed(state, &bucket),
        InputRef::Upload { id, name } => {
            let (key, n) = (id.to_string(), name.clone());
            let found = state.h.db.read(move |c| crate::db::uploads::get(c, &key, &n).map(|_| ())).await;
            stored_or(found, || format!("no upload {id}/{name} (POST /uploads stores one; retention removes old ones)"))
        }
        InputRef::Artifact { job_id, name } => {
            let (id, n) = (job_id.to_string(), name.clone());
            let found = state.h.db.read(move |c| crate::db::outputs::get(c, &id, &n).map(|_| ())).await;
            stored_or(found, || format!("job {job_id} has no stored output '{name}' to use as input"))
        }
    }
}

/// A stored input was found, or the job is refused (400 `input_not_found`, saying why).
fn stored_or(found: Result<(), DbError>, missing: impl FnOnce() -> String) -> AppResult<()> {
    match found {
        Ok(()) => Ok(()),
        Err(DbError::NotFound) => Err(AppError::bad_request("input_not_found", missing())),
        Err(e) => Err(e.into()),
    }
}

/// Buckets a job names must be ones the operator allows (`--s3-allow`).
fn check_bucket_allowed(state: &AppState, bucket: &str) -> AppResult<()> {
    if state.s3_allow.iter().any(|b| b == bucket) {
        return Ok(());
    }
    let allowed = if state.s3_allow.is_empty() { "none".to_string() } else { state.s3_allow.join(", ") };
    Err(AppError::bad_request(
        "bucket_not_allowed",
        format!("bucket {bucket} is not allowed (--s3-allow; allowed: {allowed})"),
    ))
}

/// An RTMP job may stream only where the operator allows (`--rtmp-allow`, else the
/// workers' own `--rtmp-base` hosts): never to an arbitrary host and port, which would
/// make the farm a port scanner whose error texts report what answered.
async fn check_rtmp_destination(state: &AppState, url: &str) -> AppResult<()> {
    use crate::domain::allow::{HostPattern, check_destination, rtmp_destination};
    let refuse = |m: String| AppError::bad_request("rtmp_destination_not_allowed", m);
    let (host, port) = rtmp_destination(url).ok_or_else(|| refuse("rtmp_url has no host".into()))?;
    let (patterns, rule) = match &state.rtmp_allow {
        Some(p) => (p.clone(), "--rtmp-allow"),
        None => {
            let bases = state.h.nodes.send(ListRtmpDestinations).await?;
            let exact = |h: &str, p: u16| if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") };
            let p = bases.iter().filter_map(|(h, p)| HostPattern::parse(&exact(h, *p)).ok()).collect();
            (p, "no --rtmp-allow on the master: only the workers' --rtmp-base hosts")
        }
    };
    check_destination("rtmp_url", &host, port, &patterns, rule).map_err(refuse)
}
