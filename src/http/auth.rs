//! API keys with roles, checked in constant time from `Authorization: Bearer <key>`.
//!
//! - admin: everything;
//! - worker: register, heartbeat, next, progress, control poll/ack, results;
//! - read-only: GET routes.
//!
//! `/health` and `/openapi.json` are always open. With no key configured the API is open (and the master
//! refuses to bind a non-loopback address that way unless told it is on purpose).

use crate::error::AppError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    ReadOnly,
    Worker,
    Admin,
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    pub keys: Vec<(String, Role)>,
}

impl ApiKeys {
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    fn role_of(&self, presented: &str) -> Option<Role> {
        // Compare against every key (no early exit) so timing says nothing.
        let mut found = None;
        for (k, role) in &self.keys {
            if bool::from(k.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Routes a worker key may call: (method, route template without /api/v1).
const WORKER_ROUTES: &[(&str, &str)] = &[
    ("POST", "/nodes/register"),
    ("POST", "/nodes/{id}/heartbeat"),
    ("GET", "/nodes/{id}/control"),
    ("GET", "/jobs/next"),
    ("POST", "/jobs/{id}/progress"),
    ("POST", "/jobs/{id}/control/ack"),
    ("POST", "/jobs/{id}/release"),
    ("POST", "/results"),
];

/// Which roles may call a route.
pub fn allowed(role: Role, method: &Method, route: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Worker => WORKER_ROUTES.iter().any(|(m, r)| *m == method.as_str() && *r == route),
        Role::ReadOnly => method == Method::GET && !WORKER_ROUTES.iter().any(|(_, r)| *r == route),
    }
}

/// Route template with the `/api/v1` prefix removed.
pub fn route_template(req: &ServiceRequest) -> Option<String> {
    req.match_pattern().map(|p| p.strip_prefix("/api/v1").map(str::to_string).unwrap_or(p))
}

pub async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let keys = req.app_data::<web::Data<ApiKeys>>().cloned();
    let route = route_template(&req);
    let open = match (&keys, route.as_deref()) {
        (None, _) => true,
        (Some(k), _) if !k.enabled() => true,
        // Unknown routes answer 404 without revealing anything.
        (_, None) => true,
        (_, Some("/health" | "/openapi.json")) => true,
        _ => false,
    };
    if !open {
        let keys = keys.expect("checked above");
        let route = route.expect("checked above");
        let header = req.headers().get("authorization").and_then(|h| h.to_str().ok());
        let Some(header) = header else {
            return Err(AppError::Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'".into()).into());
        };
        let presented = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("");
        let Some(role) = keys.role_of(presented.trim()) else {
            return Err(AppError::Unauthorized("invalid API key".into()).into());
        };
        if !allowed(role, req.method(), &route) {
            return Err(AppError::Forbidden(format!("this key's role may not call {} {route}", req.method())).into());
        }
        req.extensions_mut().insert(role);
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_matrix() {
        let cases = [
            (Role::Admin, "POST", "/jobs", true),
            (Role::Worker, "POST", "/jobs", false),
            (Role::Worker, "GET", "/jobs/next", true),
            (Role::Worker, "POST", "/results", true),
            (Role::Worker, "GET", "/jobs", false),
            (Role::ReadOnly, "GET", "/jobs", true),
            (Role::ReadOnly, "GET", "/jobs/next", false),
            (Role::ReadOnly, "POST", "/jobs/{id}/{action}", false),
            (Role::ReadOnly, "DELETE", "/nodes/{id}", false),
        ];
        for (role, m, route, want) in cases {
            assert_eq!(allowed(role, &Method::from_bytes(m.as_bytes()).unwrap(), route), want, "{role:?} {m} {route}");
        }
    }

    #[test]
    fn keys_resolve_to_roles() {
        let k = ApiKeys { keys: vec![("a".into(), Role::Admin), ("w".into(), Role::Worker)] };
        assert_eq!(k.role_of("w"), Some(Role::Worker));
        assert_eq!(k.role_of("x"), None);
        assert_eq!(k.role_of(""), None);
    }
}
