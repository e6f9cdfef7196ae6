//! Console sessions: an operator signs in with an API key once; the master keeps the
//! session (its role, expiry and CSRF token) in `console_sessions` and hands the
//! browser an HttpOnly, SameSite=Strict cookie (Secure under TLS) holding a random
//! token. The cookie then stands for the key on every route the key's role may call;
//! state-changing requests must also carry the session's CSRF token (`X-CSRF-Token`).

use crate::db::now_micros;
use crate::db::sessions::{self as db_sessions, SessionRow};
use crate::domain::credentials::{Digest, digest, from_hex, new_token, to_hex};
use crate::error::AppError;
use crate::http::AppState;
use crate::http::auth::{Caller, Role};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::Method;
use actix_web::{HttpRequest, web};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "ffrtmp_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A live console session.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// SHA-256 (hex) of the cookie's token: the row's id.
    pub id: String,
    pub role: Role,
    pub key: Digest,
    pub csrf: String,
}

impl ConsoleSession {
    pub fn caller(&self) -> Caller {
        Caller { role: Some(self.role), key: Some(self.key) }
    }
}

/// The live session the request's cookie names. None: no cookie, or it names no live
/// session (expired, signed out, revoked, or never issued).
pub async fn lookup(req: &HttpRequest) -> Option<ConsoleSession> {
    let token = req.cookie(COOKIE)?.value().to_string();
    let state = req.app_data::<web::Data<AppState>>()?.clone();
    let id = to_hex(&digest(&token));
    let row = state.h.db.read(move |c| db_sessions::live(c, &id, now_micros())).await.ok()??;
    Some(ConsoleSession {
        id: row.id,
        role: Role::parse(&row.role).filter(|r| *r != Role::Worker)?,
        key: from_hex(&row.key_digest)?,
        csrf: row.csrf_token,
    })
}

/// Does the request carry this session's CSRF token? (Constant time.)
pub fn csrf_ok(req: &HttpRequest, session: &ConsoleSession) -> bool {
    let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    sent.len() == session.csrf.len() && bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes()))
}

/// Reads need no CSRF token (they change nothing and a cross-site page cannot read
/// their answers).
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// The caller a request without an API key is, by its console session: None when it
/// brings no session cookie (the missing key is the answer), else the session's role,
/// or why it is refused.
pub async fn caller(req: &HttpRequest) -> Option<Result<Caller, AppError>> {
    if req.headers().contains_key("authorization") || req.cookie(COOKIE).is_none() {
        return None;
    }
    let Some(session) = lookup(req).await else {
        return Some(Err(AppError::Unauthorized(
            "the console session expired or was signed out; sign in again at /ui/login".into(),
        )));
    };
    if !is_safe(req.method()) && !csrf_ok(req, &session) {
        return Some(Err(AppError::Csrf(format!(
            "a console session's {} needs the session's CSRF token in the X-CSRF-Token header",
            req.method()
        ))));
    }
    Some(Ok(session.caller()))
}

/// Start a session for a key of `role`; the cookie to set, or why not.
pub async fn start(state: &AppState, role: Role, key: Digest) -> Result<Cookie<'static>, AppError> {
    let token = new_token();
    let now = now_micros();
    let row = SessionRow {
        id: to_hex(&digest(&token)),
        role: role.as_str().to_string(),
        key_digest: to_hex(&key),
        csrf_token: new_token(),
        created_at: now,
        expires_at: now + state.console_session.as_micros() as i64,
        revoked_at: None,
    };
    if !state.h.db.write(move |c| db_sessions::create(c, &row)).await? {
        return Err(AppError::Unavailable {
            code: "too_many_sessions",
            message: format!(
                "{} console sessions are live; sign some out or wait for them to expire",
                db_sessions::MAX_LIVE
            ),
        });
    }
    Ok(cookie(token, state)).map(|mut c| {
        c.set_max_age(actix_web::cookie::time::Duration::seconds(state.console_session.as_secs() as i64));
        c
    })
}

/// The session cookie (a removal cookie when `token` is empty).
pub fn cookie(token: String, state: &AppState) -> Cookie<'static> {
    Cookie::build(COOKIE, token).path("/").http_only(true).secure(state.tls).same_site(SameSite::Strict).finish()
}

/// Sign a session out (its cookie stops working at once).
pub async fn end(state: &AppState, session: &ConsoleSession) -> Result<(), AppError> {
    let id = session.id.clone();
    state.h.db.write(move |c| db_sessions::revoke(c, &id, now_micros())).await?;
    Ok(())
}
