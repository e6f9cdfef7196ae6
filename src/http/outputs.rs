//! A job's outputs: workers store them (`PUT`, fenced by attempt, checksummed,
//! streamed to disk), operators list and download them (HTTP Range, `ETag` = SHA-256),
//! and free them early (`DELETE`, finished jobs only).

use super::AppState;
use super::auth::node_token;
use super::jobs::{load_row, worker_job_id};
use crate::actors::messages::{FromNode, MetricEvent, MetricRecorded, VerifyLease};
use crate::db::now_micros;
use crate::db::outputs::{self as db_outputs, OutputRow};
use crate::domain::media::{check_artifact_name, content_type_of};
use crate::error::{AppError, AppResult};
use crate::storage::transfer::{BYTES_HEADER, LOCATION_HEADER, SHA256_HEADER};
use crate::storage::{ArtifactStore, StoreError};
use crate::wire::{ErrorBody, JobOutput, JobOutputs};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    pub node_id: String,
    pub attempt: i32,
}

fn output_name(name: &str) -> AppResult<()> {
    check_artifact_name(name).map_err(|m| AppError::bad_request("invalid_output_name", m))
}

#[utoipa::path(put, path = "/jobs/{id}/outputs/{name}", params(("id" = String, Path), ("name" = String, Path), UploadQuery,
        ("x-content-sha256" = String, Header, description = "Hex SHA-256 of the body")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = JobOutput), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn upload_output(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    q: web::Query<UploadQuery>,
    body: web::Payload,
) -> AppResult<HttpResponse> {
    let (id, name) = path.into_inner();
    let uid = worker_job_id(&id)?;
    output_name(&name)?;
    crate::domain::limits::check_text("node_id", &q.node_id, 128)
        .map_err(|e| AppError::bad_request("invalid_query", e.message))?;
    let sha = req
        .headers()
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            AppError::bad_request("missing_checksum", format!("send the body's hex SHA-256 in {SHA256_HEADER}"))
        })?;
    if let Some(len) = req.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > state.max_output_bytes
    {
        return Err(AppError::PayloadTooLarge(state.max_output_bytes as usize));
    }
    // Refuse a stale attempt before taking its bytes; the row is fenced again when it
    // is written, since the lease may move while the file streams in.
    let verify = VerifyLease { node_id: q.node_id.clone(), attempt: q.attempt };
    let from =
        FromNode { job: uid, node_id: q.node_id.clone(), token: node_token(&req), attempt_given: true, msg: verify };
    match state.h.scheduler.send(from).await?? {
        Some(answer) => answer?,
        None => {
            return Err(AppError::stale_attempt(format!(
                "job {id} is not running on node {} (attempt {}): its outputs are not wanted",
                q.node_id, q.attempt
            )));
        }
    }
    let uid_s = uid.to_string();
    let key = uid_s.clone();
    let stored_already = state.h.db.read(move |c| db_outputs::count(c, &key)).await?;
    if stored_already >= crate::domain::limits::MAX_OUTPUTS_PER_JOB as i64 {
        return Err(AppError::bad_request(
            "too_many_outputs",
            format!(
                "job {uid_s} already has {stored_already} outputs (at most {})",
                crate::domain::limits::MAX_OUTPUTS_PER_JOB
            ),
        ));
    }
    if let Some(external) = req.headers().get(LOCATION_HEADER) {
        return record_external(&state, &req, external, uid_s, name, q.into_inner(), sha).await;
    }
    let location = ArtifactStore::location(&uid_s, q.attempt, &name);
    let stored =
        state.artifacts.receive(&location, body, state.max_output_bytes, Some(&sha)).await.map_err(|e| match e {
            StoreError::TooLarge(n) => AppError::PayloadTooLarge(n as usize),
            StoreError::ChecksumMismatch { .. } => AppError::bad_request("checksum_mismatch", e.to_string()),
            StoreError::Body(_) => AppError::bad_request("incomplete_upload", e.to_string()),
            StoreError::Io(_) => AppError::Unavailable { code: "storage_unavailable", message: e.to_string() },
        })?;
    let row = OutputRow {
        job_id: uid_s,
        name: name.clone(),
        attempt: q.attempt,
        bytes: stored.bytes as i64,
        sha256: stored.sha256,
        content_type: content_type_of(&name),
        location: location.clone(),
        created_at: now_micros(),
    };
    let node = q.node_id.clone();
    let wire = row.to_wire();
    match state.h.db.write(move |c| db_outputs::record(c, row, &node)).await {
        Ok(replaced) => {
            let mut delta = stored.bytes as i64;
            if let Some(old) = replaced.filter(|o| !o.is_external()) {
                state.artifacts.remove(&old.location).await;
                delta -= old.bytes;
            }
            state.h.metrics.do_send(MetricRecorded(MetricEvent::ArtifactBytesChanged(delta)));
            Ok(HttpResponse::Created().json(wire))
        }
        Err(e) => {
            // Not recorded: the file is nobody's (a same-attempt re-upload that failed
            // here leaves the earlier row pointing at a replaced, equally verified file).
            if e.is_refusal() {
                state.artifacts.remove(&location).await;
                return Err(AppError::stale_attempt(e.to_string()));
            }
            Err(e.into())
        }
    }
}

/// An output the worker wrote to an allowed bucket under the job's destination: only
/// its record is kept here.
async fn record_external(
    state: &AppState,
    req: &HttpRequest,
    location: &actix_web::http::header::HeaderValue,
    job_id: String,
    name: String,
    q: UploadQuery,
    sha: String,
) -> AppResult<HttpResponse> {
    use crate::domain::media::{check_bucket, check_library_dir, check_object_key, file_path, split_s3};
    let bad = |m: String| AppError::bad_request("invalid_output_location", m);
    let location = location.to_str().map_err(|_| bad("x-output-location is not text".into()))?.to_string();
    // The location must end with the output's name (a package's keeps its folders).
    let suffix = format!("/{name}");
    let named = if let Some((bucket, key)) = split_s3(&location) {
        check_bucket(bucket).map_err(bad)?;
        check_object_key(key).map_err(bad)?;
        if !state.s3_allow.iter().any(|b| b == bucket) {
            return Err(AppError::bad_request("bucket_not_allowed", format!("bucket {bucket} is not in --s3-allow")));
        }
        format!("/{key}").ends_with(&suffix)
    } else if let Some(path) = file_path(&location) {
        // A shared library: the worker checked its own --output-root before writing.
        match path.strip_suffix(name.as_str()).filter(|dir| dir.ends_with('/')) {
            Some(dir) => {
                check_library_dir(dir).map_err(bad)?;
                true
            }
            None => false,
        }
    } else {
        return Err(bad(format!("x-output-location must be s3://bucket/key or file:///path, not '{location}'")));
    };
    if !named {
        return Err(bad(format!("{location} is not named {name}")));
    }
    let bytes = req
        .headers()
        .get(BYTES_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| bad(format!("send the object's size in {BYTES_HEADER}")))?;
    let row = OutputRow {
        job_id,
        name: name.clone(),
        attempt: q.attempt,
        bytes: bytes.min(i64::MAX as u64) as i64,
        sha256: sha,
        content_type: content_type_of(&name),
        location,
        created_at: now_micros(),
    };
    let wire = row.to_wire();
    let node = q.node_id;
    match state.h.db.write(move |c| db_outputs::record(c, row, &node)).await {
        Ok(_) => Ok(HttpResponse::Created().json(wire)),
        Err(e) if e.is_refusal() => Err(AppError::stale_attempt(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/jobs/{id}/outputs", params(("id" = String, Path)),
    responses((status = 200, body = JobOutputs), (status = 404, body = ErrorBody)))]
pub async fn list_outputs(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    let row = load_row(&state, &id).await?;
    let rows = outputs_of(&state, &row.id).await?;
    Ok(HttpResponse::Ok().json(JobOutputs { job_id: row.id, outputs: rows.iter().map(OutputRow::to_wire).collect() }))
}

/// The jobs whose stored outputs are `job`'s: itself, or for a graph's parent the steps
/// that publish (package, thumbnails).
async fn owners(state: &AppState, job: &str) -> AppResult<Vec<String>> {
    Ok(super::graphs::publishing_children(state, job).await?.unwrap_or_else(|| vec![job.to_string()]))
}

/// A job's outputs (a parent's: its package's and thumbnails').
pub async fn outputs_of(state: &AppState, job: &str) -> AppResult<Vec<OutputRow>> {
    let ids = owners(state, job).await?;
    Ok(state
        .h
        .db
        .read(move |c| {
            let mut all = Vec::new();
            for id in &ids {
                all.extend(db_outputs::list(c, id)?);
            }
            Ok(all)
        })
        .await?)
}

#[utoipa::path(get, path = "/jobs/{id}/outputs/{name}", params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The file (Range requests answer 206)", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody)))]
pub async fn download_output(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let (id, name) = path.into_inner();
    output_name(&name)?;
    let row = load_row(&state, &id).await?;
    let key = (owners(&state, &row.id).await?, name.clone());
    let find = move |c: &mut crate::db::Conn| {
        for id in &key.0 {
            match db_outputs::get(c, id, &key.1) {
                Err(crate::db::DbError::NotFound) => continue,
                found => return found,
            }
        }
        Err(crate::db::DbError::NotFound)
    };
    let out = state.h.db.read(find).await.map_err(|e| match e {
        crate::db::DbError::NotFound => AppError::NotFound {
            code: "output_not_found",
            message: format!("job {} has no stored output '{name}'", row.id),
        },
        other => other.into(),
    })?;
    serve_stored(&state, &req, &out).await
}

/// Answer a download of a stored file: a presigned redirect for a bucket, the file
/// itself (with Range support and its SHA-256 as `ETag`) from a directory or a shared
/// library the master mounts.
pub(crate) async fn serve_stored(state: &AppState, req: &HttpRequest, out: &OutputRow) -> AppResult<HttpResponse> {
    if let Some((bucket, key)) = crate::domain::media::split_s3(&out.location) {
        // In a bucket: a short-lived presigned URL, signed with the master's credentials.
        let url = crate::storage::objects::presigned_get(bucket, key, std::time::Duration::from_secs(900))
            .await
            .map_err(|m| AppError::Unavailable { code: "storage_unavailable", message: m })?;
        return Ok(HttpResponse::TemporaryRedirect().insert_header(("Location", url)).finish());
    }
    let on_disk = match crate::domain::media::file_path(&out.location) {
        // In a shared library: served when the master mounts it too (--output-root).
        Some(p) if crate::storage::under_roots(std::path::Path::new(p), &state.output_roots) => p.into(),
        Some(_) => {
            return Err(AppError::Conflict {
                code: "output_elsewhere",
                message: format!(
                    "output '{}' is stored at {} on the workers' shared filesystem; mount it on the master (--output-root) to download it here",
                    out.name, out.location
                ),
            });
        }
        None => match state.artifacts.presigned(&out.location).await {
            // The master's store is a bucket: a short-lived presigned URL.
            Some(url) => {
                let url = url.map_err(|m| AppError::Unavailable { code: "storage_unavailable", message: m })?;
                return Ok(HttpResponse::TemporaryRedirect().insert_header(("Location", url)).finish());
            }
            None => state.artifacts.local_path(&out.location).expect("a directory store has paths"),
        },
    };
    let file = actix_files::NamedFile::open_async(on_disk).await.map_err(|e| AppError::NotFound {
        code: "output_not_found",
        message: format!("output '{}' is recorded but unreadable: {e}", out.name),
    })?;
    let disposition = actix_web::http::header::ContentDisposition {
        disposition: actix_web::http::header::DispositionType::Attachment,
        parameters: vec![actix_web::http::header::DispositionParam::Filename(out.name.clone())],
    };
    let mime: mime_guess::Mime = out.content_type.parse().unwrap_or(mime_guess::mime::APPLICATION_OCTET_STREAM);
    let mut resp = file.use_etag(false).set_content_type(mime).set_content_disposition(disposition).into_response(req);
    // The SHA-256 is the entity tag: a client can verify what it got.
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&format!("\"{}\"", out.sha256)) {
        resp.headers_mut().insert(actix_web::http::header::ETAG, v);
    }
    Ok(resp)
}

#[utoipa::path(delete, path = "/jobs/{id}/outputs", params(("id" = String, Path)),
    responses((status = 200, body = JobOutputs, description = "What was deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_outputs(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    let row = load_row(&state, &id).await?;
    if !row.state().is_terminal() {
        return Err(AppError::Conflict {
            code: "job_not_finished",
            message: format!("job {} is '{}'; its outputs can be deleted once it has finished", row.id, row.status),
        });
    }
    // A parent's: every step's (renditions included).
    let key = row.id.clone();
    let mut ids: Vec<String> = state
        .h
        .db
        .read(move |c| Ok(crate::db::graph::children(c, &key)?.into_iter().map(|(g, _)| g.job_id).collect::<Vec<_>>()))
        .await?;
    ids.push(row.id.clone());
    let gone = state.h.db.write(move |c| db_outputs::forget(c, &ids)).await?;
    forget_files(&state.artifacts, &state.h.metrics, &gone).await;
    Ok(HttpResponse::Ok().json(JobOutputs { job_id: row.id, outputs: gone.iter().map(OutputRow::to_wire).collect() }))
}

/// Remove the files of forgotten outputs and count them out of the gauge.
pub async fn forget_files(
    store: &ArtifactStore,
    metrics: &actix::Addr<crate::actors::metrics::MetricsActor>,
    gone: &[OutputRow],
) {
    let mut freed = 0;
    // Objects in a bucket are the bucket owner's: forgetting the record leaves them.
    for o in gone.iter().filter(|o| !o.is_external()) {
        store.remove(&o.location).await;
        freed += o.bytes;
    }
    if freed > 0 {
        metrics.do_send(MetricRecorded(MetricEvent::ArtifactBytesChanged(-freed)));
    }
}
