//! The one error type of the master's request path, with stable snake_case codes.
//!
//! Actors return it, `http::error` turns it into `{"error": code, "message": …}` with
//! the status below. Codes are API: never rename one.

use crate::db::DbError;
use crate::domain::state::JobState;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or names an unknown value.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 400: the job is not in a state that allows the action.
    #[error("cannot {action} job in status '{current}'")]
    InvalidTransition { current: JobState, action: &'static str },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 409: e.g. a report for an attempt whose lease moved on.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// 403: a node-scoped call without the node's token (or with another one).
    #[error("{0}")]
    NodeToken(String),
    /// 403: a console session's state-changing request without its CSRF token.
    #[error("{0}")]
    Csrf(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 422: well-formed, but contradicts what the server already holds (an
    /// Idempotency-Key replayed with another body).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 429: this key's request budget is spent for now.
    #[error("too many requests with this key; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 503: storage full or unreachable, or the master is shutting down.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest { code, message: message.into() }
    }
    pub fn job_not_found(id: &str) -> Self {
        AppError::NotFound { code: "job_not_found", message: format!("no job with id '{id}'") }
    }
    pub fn node_not_found(id: &str) -> Self {
        AppError::NotFound { code: "node_not_found", message: format!("no node with id '{id}'; register it first") }
    }
    pub fn node_token(node_id: &str, why: crate::domain::credentials::TokenRefusal) -> Self {
        AppError::NodeToken(why.message(node_id))
    }
    pub fn stale_attempt(message: impl Into<String>) -> Self {
        AppError::Conflict { code: "stale_attempt", message: message.into() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest { code, .. }
            | AppError::NotFound { code, .. }
            | AppError::Conflict { code, .. }
            | AppError::Unprocessable { code, .. }
            | AppError::Unavailable { code, .. } => code,
            AppError::InvalidTransition { .. } => "invalid_transition",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::Csrf(_) => "csrf_token_invalid",
            AppError::NodeToken(_) => "invalid_node_token",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest { .. } | AppError::InvalidTransition { .. } => 400,
            AppError::Unauthorized(_) => 401,
            AppError::Forbidden(_) | AppError::NodeToken(_) | AppError::Csrf(_) => 403,
            AppError::NotFound { .. } => 404,
            AppError::MethodNotAllowed => 405,
            AppError::Conflict { .. } => 409,
            AppError::PayloadTooLarge(_) => 413,
            AppError::Unprocessable { .. } => 422,
            AppError::RateLimited { .. } => 429,
            AppError::Unavailable { .. } => 503,
            AppError::Internal(_) => 500,
        }
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => AppError::NotFound { code: "not_found", message: "not found".into() },
            DbError::Unavailable(m) => AppError::Unavailable {
                code: "database_unavailable",
                message: format!("the database cannot take writes now ({m}); retry later"),
            },
            DbError::Conflict { message, .. } => AppError::Conflict { code: "conflict", message },
            DbError::Refused(refusal) => refusal.into(),
            DbError::Other(m) => AppError::Internal(format!("database error: {m}")),
        }
    }
}

impl From<crate::domain::state::Refusal> for AppError {
    fn from(r: crate::domain::state::Refusal) -> Self {
        use crate::domain::state::Refusal;
        match r {
            Refusal::Invalid { current, action } => AppError::InvalidTransition { current, action: action.as_str() },
            Refusal::NotRetryable { .. } => AppError::bad_request("invalid_transition", r.to_string()),
        }
    }
}

impl From<actix::MailboxError> for AppError {
    fn from(e: actix::MailboxError) -> Self {
        AppError::Unavailable {
            code: "service_unavailable",
            message: format!("the master is not accepting requests ({e})"),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases: Vec<(AppError, u16, &str)> = vec![
            (AppError::bad_request("invalid_queue", "x"), 400, "invalid_queue"),
            (AppError::InvalidTransition { current: JobState::Completed, action: "pause" }, 400, "invalid_transition"),
            (AppError::job_not_found("x"), 404, "job_not_found"),
            (AppError::stale_attempt("x"), 409, "stale_attempt"),
            (AppError::Unauthorized("x".into()), 401, "unauthorized"),
            (AppError::Forbidden("x".into()), 403, "forbidden"),
            (AppError::PayloadTooLarge(1), 413, "payload_too_large"),
            (DbError::Unavailable("disk full".into()).into(), 503, "database_unavailable"),
            (DbError::Other("x".into()).into(), 500, "internal_error"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e}");
        }
        let e = AppError::InvalidTransition { current: JobState::Completed, action: "pause" };
        assert!(e.to_string().contains("completed"));
    }
}
