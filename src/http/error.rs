//! `AppError` as an HTTP response, and the JSON errors of extractors and unknown routes.

use crate::error::AppError;
use crate::wire::ErrorBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
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
        let mut res = HttpResponse::build(self.status_code());
        if let AppError::RateLimited { retry_after_secs } = self {
            res.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        res.json(ErrorBody { error: self.code().to_string(), message })
    }
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_BODY_BYTES).content_type_required(false).error_handler(|err, _| {
        let e = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                AppError::PayloadTooLarge(MAX_BODY_BYTES)
            }
            JsonPayloadError::Deserialize(d) => {
                AppError::bad_request("invalid_json", format!("invalid request body: {d}"))
            }
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

/// Every error leaves as `{"error", "message"}` JSON, including the ones actix-web
/// answers itself (a 413 from a body extractor, a 400 from a malformed request line):
/// a client never has to parse text/plain.
pub fn ensure_json<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // The console's own error pages are for people (and say what is wrong already).
    let is_console_page = res.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_json || is_console_page {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status.as_u16() {
        413 => "payload_too_large",
        404 => "route_not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        400..=499 => "bad_request",
        _ => "internal_error",
    };
    let message = match status.as_u16() {
        413 => format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = serde_json::to_string(&ErrorBody { error: code.into(), message }).unwrap_or_default();
    let (req, res) = res.into_parts();
    let mut res = ServiceResponse::new(req, res.set_body(body)).map_into_boxed_body().map_into_right_body();
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(ErrorHandlerResponse::Response(res))
}
