//! API keys with roles, checked in constant time from `Authorization: Bearer <key>`.
//!
//! - admin: everything;
//! - worker: register, heartbeat, next, progress, control poll/ack, results, storing
//!   outputs and reading them (`artifact://` inputs);
//! - read-only: GET routes (output downloads included).
//!
//! Authorisation runs on the resource the router dispatched to, never on the raw
//! path: every resource is wrapped by [`authorize`] with its own route template, so
//! `/%6Aobs`, `/api/v1/jobs` and `/jobs` are judged alike because the router decoded
//! them alike. A request that matches no resource is denied by default
//! ([`unmatched`]): 401 without a valid key, 404 with one.
//!
//! `/health` and `/openapi.json` are always open. With no key configured the API is open (and the master
//! refuses to bind a non-loopback address that way unless told it is on purpose).

use crate::domain::credentials::{Digest, digest, digests_equal};
use crate::error::AppError;
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, web};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ReadOnly,
    Worker,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::ReadOnly, Role::Worker, Role::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(Digest, Role)>,
}

/// Who made a request, as the auth layer established it (in the request extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// None when the API is open (no key configured).
    pub role: Option<Role>,
    /// Digest of the key used, for per-key limits and idempotency scopes.
    pub key: Option<Digest>,
}

/// The route template of the resource that served a request (without `/api/v1`).
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

impl ApiKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, Role)>) -> Self {
        ApiKeys { keys: keys.into_iter().filter(|(k, _)| !k.is_empty()).map(|(k, r)| (digest(&k), r)).collect() }
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The role (and key digest) of a presented key: what the console's sign-in checks.
    pub fn role_of(&self, presented: &str) -> Option<(Role, Digest)> {
        // Compare fixed-length digests against every key (no early exit), so timing
        // says nothing about the keys or their lengths.
        let d = digest(presented);
        let mut found = None;
        for (k, role) in &self.keys {
            if digests_equal(k, &d) {
                found = Some((*role, d));
            }
        }
        found
    }

    /// The key a request presents, resolved to its role; Err when it presents none or
    /// an unknown one.
    pub fn caller(&self, req: &HttpRequest) -> Result<Caller, AppError> {
        if !self.enabled() {
            return Ok(Caller { role: None, key: None });
        }
        let header = req.headers().get("authorization").and_then(|h| h.to_str().ok());
        let Some(header) = header else {
            return Err(AppError::Unauthorized(
                "missing Authorization header; send 'Authorization: Bearer <key>'".into(),
            ));
        };
        let presented = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("");
        match self.role_of(presented.trim()) {
            Some((role, key)) => Ok(Caller { role: Some(role), key: Some(key) }),
            None => Err(AppError::Unauthorized("invalid API key".into())),
        }
    }
}

/// Routes a worker key may call: (method, route template without /api/v1).
pub const WORKER_ROUTES: &[(&str, &str)] = &[
    ("POST", "/nodes/register"),
    ("POST", "/nodes/{id}/heartbeat"),
    ("GET", "/nodes/{id}/control"),
    ("GET", "/jobs/next"),
    ("POST", "/jobs/{id}/progress"),
    ("POST", "/jobs/{id}/control/ack"),
    ("POST", "/jobs/{id}/release"),
    ("POST", "/results"),
    ("POST", "/results/batch"),
    ("POST", "/nodes/{id}/progress"),
    ("PUT", "/jobs/{id}/outputs/{name:.+}"),
    // Jobs may read other jobs' outputs (`artifact://` inputs) and uploads (`upload://`).
    ("GET", "/jobs/{id}/outputs/{name:.+}"),
    ("GET", "/uploads/{id}/{name:.+}"),
];

/// Worker routes read-only keys may call too (downloads of outputs).
pub const SHARED_READS: &[&str] = &["/jobs/{id}/outputs/{name:.+}", "/uploads/{id}/{name:.+}"];

pub const NODE_TOKEN_HEADER: &str = "x-node-token";

/// The node token a request presents (`X-Node-Token`), for node-scoped worker calls.
pub fn node_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(NODE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// GET routes only admins may call: webhook subscriptions name receivers' URLs.
pub const ADMIN_READS: &[&str] = &["/webhooks", "/webhooks/{id}", "/webhooks/{id}/deliveries"];

/// Routes anyone may call.
pub const OPEN_ROUTES: &[&str] = &["/health", "/openapi.json"];

/// Which roles may call a route.
pub fn allowed(role: Role, method: &Method, route: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Worker => WORKER_ROUTES.iter().any(|(m, r)| *m == method.as_str() && *r == route),
        Role::ReadOnly => {
            method == Method::GET
                && !ADMIN_READS.contains(&route)
                && (SHARED_READS.contains(&route) || !WORKER_ROUTES.iter().any(|(_, r)| *r == route))
        }
    }
}

/// The route template a request was served by (set by [`authorize`]).
pub fn route_template(req: &HttpRequest) -> Option<&'static str> {
    req.extensions().get::<RouteTemplate>().map(|t| t.0)
}

/// Middleware of one resource: `route` is that resource's template, so the decision
/// is made on exactly what the router dispatched.
pub async fn authorize(
    route: &'static str,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    req.extensions_mut().insert(RouteTemplate(route));
    if OPEN_ROUTES.contains(&route) {
        return next.call(req).await;
    }
    let keys = req.app_data::<web::Data<ApiKeys>>().cloned().unwrap_or_default();
    let caller = match keys.caller(req.request()) {
        Ok(c) => c,
        // No key: a console session (its cookie) may stand for one.
        Err(e) => match super::ui::session::caller(req.request()).await {
            Some(Ok(c)) => c,
            // Answered here (not as an Err) so the request still counts under its route.
            Some(Err(session_error)) => return Ok(req.error_response(session_error)),
            None => return Ok(req.error_response(e)),
        },
    };
    if let Some(role) = caller.role
        && !allowed(role, req.method(), route)
    {
        let e = AppError::Forbidden(format!("this key's role may not call {} {route}", req.method()));
        return Ok(req.error_response(e));
    }
    if let Some(limits) = req.app_data::<web::Data<super::rate_limit::RateLimits>>()
        && let Err(e) = limits.check(caller.key.as_ref(), caller.role, route)
    {
        return Ok(req.error_response(e));
    }
    req.extensions_mut().insert(caller);
    next.call(req).await
}

/// No resource matched: deny by default. Without a valid key the answer is 401 (and
/// says nothing about which paths exist); with one it is 404.
pub async fn unmatched(req: HttpRequest) -> Result<actix_web::HttpResponse, AppError> {
    if let Some(keys) = req.app_data::<web::Data<ApiKeys>>() {
        keys.caller(&req)?;
    }
    Err(AppError::NotFound { code: "route_not_found", message: format!("no route {} {}", req.method(), req.path()) })
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
            (Role::Worker, "PUT", "/jobs/{id}/outputs/{name:.+}", true),
            (Role::Worker, "GET", "/jobs/{id}/outputs/{name:.+}", true),
            (Role::Worker, "GET", "/jobs/{id}/outputs", false),
            (Role::Worker, "DELETE", "/jobs/{id}/outputs", false),
            (Role::ReadOnly, "GET", "/jobs/{id}/outputs/{name:.+}", true),
            (Role::ReadOnly, "PUT", "/jobs/{id}/outputs/{name:.+}", false),
            (Role::ReadOnly, "GET", "/jobs/{id}/outputs", true),
            (Role::ReadOnly, "DELETE", "/jobs/{id}/outputs", false),
            (Role::ReadOnly, "GET", "/events", true),
            (Role::Worker, "GET", "/events", false),
            (Role::ReadOnly, "GET", "/webhooks", false),
            (Role::ReadOnly, "GET", "/webhooks/{id}/deliveries", false),
            (Role::Admin, "POST", "/webhooks/{id}/deliveries/{delivery_id}/redeliver", true),
            (Role::ReadOnly, "POST", "/uploads", false),
            (Role::Worker, "POST", "/uploads", false),
            (Role::Worker, "GET", "/uploads/{id}/{name:.+}", true),
            (Role::ReadOnly, "GET", "/uploads/{id}/{name:.+}", true),
            (Role::ReadOnly, "DELETE", "/sessions", false),
        ];
        for (role, m, route, want) in cases {
            assert_eq!(allowed(role, &Method::from_bytes(m.as_bytes()).unwrap(), route), want, "{role:?} {m} {route}");
        }
    }

    #[test]
    fn keys_resolve_to_roles() {
        let k = ApiKeys::new([
            ("a".to_string(), Role::Admin),
            ("w".to_string(), Role::Worker),
            (String::new(), Role::Admin),
        ]);
        assert_eq!(k.role_of("w").map(|r| r.0), Some(Role::Worker));
        assert_eq!(k.role_of("x"), None);
        assert_eq!(k.role_of(""), None, "an empty key is never configured");
    }
}
