//! Input files uploaded to the master (`POST /uploads`, the console's submit form):
//! streamed into the artifact store (capped by `--max-output-bytes`, checksummed),
//! recorded in `uploads`, and read back by workers as `upload://<id>/<name>` inputs.

use super::AppState;
use crate::actors::messages::{MetricEvent, MetricRecorded};
use crate::db::now_micros;
use crate::db::uploads::{self as db_uploads, UploadRow};
use crate::domain::media::{check_artifact_name, content_type_of};
use crate::error::{AppError, AppResult};
use crate::storage::StoreError;
use crate::storage::transfer::SHA256_HEADER;
use crate::wire::{ErrorBody, Upload};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    /// The file's name (its extension helps ffprobe): what `upload://<id>/<name>` ends with.
    pub name: String,
}

#[utoipa::path(post, path = "/uploads", params(UploadQuery,
        ("x-content-sha256" = Option<String>, Header, description = "Hex SHA-256 of the body, checked when given")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Upload), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn upload_input(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<UploadQuery>,
    body: web::Payload,
) -> AppResult<HttpResponse> {
    let name = q.into_inner().name;
    check_artifact_name(&name).map_err(|m| AppError::bad_request("invalid_upload_name", m))?;
    let sha = match req.headers().get(SHA256_HEADER).map(|v| v.to_str().unwrap_or_default()) {
        None => None,
        Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => Some(v.to_ascii_lowercase()),
        Some(_) => {
            return Err(AppError::bad_request("invalid_checksum", format!("{SHA256_HEADER} must be a hex SHA-256")));
        }
    };
    if let Some(len) = req.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > state.max_output_bytes
    {
        return Err(AppError::PayloadTooLarge(state.max_output_bytes as usize));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let location = format!("uploads/{id}/{name}");
    let stored = state.artifacts.receive(&location, body, state.max_output_bytes, sha.as_deref()).await.map_err(
        |e| match e {
            StoreError::TooLarge(n) => AppError::PayloadTooLarge(n as usize),
            StoreError::ChecksumMismatch { .. } => AppError::bad_request("checksum_mismatch", e.to_string()),
            StoreError::Body(_) => AppError::bad_request("incomplete_upload", e.to_string()),
            StoreError::Io(_) => AppError::Unavailable { code: "storage_unavailable", message: e.to_string() },
        },
    )?;
    let row = UploadRow {
        id,
        content_type: content_type_of(&name),
        name,
        bytes: stored.bytes as i64,
        sha256: stored.sha256,
        location: location.clone(),
        created_at: now_micros(),
    };
    let wire = row.to_wire();
    let bytes = row.bytes;
    match state.h.db.write(move |c| db_uploads::insert(c, &row)).await {
        Ok(true) => {
            state.h.metrics.do_send(MetricRecorded(MetricEvent::ArtifactBytesChanged(bytes)));
            Ok(HttpResponse::Created().json(wire))
        }
        refused => {
            state.artifacts.remove(&location).await;
            refused?;
            Err(AppError::Unavailable {
                code: "too_many_uploads",
                message: format!(
                    "{} uploads are stored; wait for retention to remove old ones",
                    db_uploads::MAX_STORED
                ),
            })
        }
    }
}

#[utoipa::path(get, path = "/uploads/{id}/{name}", params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The file (HTTP Range supported; ETag = SHA-256)"), (status = 404, body = ErrorBody)))]
pub async fn download_upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let (id, name) = path.into_inner();
    let not_found = || AppError::NotFound { code: "upload_not_found", message: format!("no upload {id}/{name}") };
    if uuid::Uuid::parse_str(&id).is_err() || check_artifact_name(&name).is_err() {
        return Err(not_found());
    }
    let (key, n) = (id.clone(), name.clone());
    let row = state.h.db.read(move |c| db_uploads::get(c, &key, &n)).await.map_err(|e| match e {
        crate::db::DbError::NotFound => not_found(),
        other => other.into(),
    })?;
    super::outputs::serve_stored(&state, &req, &row.as_output()).await
}
