//! `AppError` as an HTTP response, and the JSON errors of extractors and unknown routes.

use crate::error::AppError;
use crate::wire::ErrorBody;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, error::JsonPayloadError, web};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            AppError::Internal(m) => {
                log::error!("internal error: {m}");
                "internal error; see the master's log".to_string()
            }
            other => other.to_string(),
        };
        HttpResponse::build(self.status_code()).json(ErrorBody { error: self.code().to_string(), message })
    }
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_BODY_BYTES).content_type_required(false).error_handler(|err, _| {
        let e = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                AppError::PayloadTooLarge(MAX_BODY_BYTES)
            }
            JsonPayloadError::Deserialize(d) => AppError::bad_request("invalid_json", format!("invalid request body: {d}")),
            JsonPayloadError::ContentType => {
                AppError::bad_request("invalid_content_type", "send the body as application/json")
            }
            other => AppError::bad_request("invalid_json", format!("invalid request body: {other}")),
        };
        e.into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| AppError::bad_request("invalid_query", format!("invalid query string: {err}")).into())
}

pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::default().limit(MAX_BODY_BYTES)
}

pub async fn method_not_allowed() -> Result<HttpResponse, AppError> {
    Err(AppError::MethodNotAllowed)
}

/// Unknown paths on the open metrics listener.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound { code: "route_not_found", message: format!("no route {} {}", req.method(), req.path()) })
}
