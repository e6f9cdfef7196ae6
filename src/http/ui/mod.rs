//! The operator's web console at `/ui`: server-rendered pages (maud) over the same
//! reads the API serves, a little JavaScript for the live parts (`GET /events`) and the
//! buttons (which call the API itself, with the session's CSRF token), and a
//! stylesheet; all embedded in the binary.
//!
//! Who may see what is the API's rule: a page shows what the viewer's role may read,
//! and control buttons only to roles that may use them (the API refuses the rest
//! anyway). A page asked with `?fragment=1` answers its `<main>` alone: what the live
//! script swaps in when an event says the page is stale.

mod jobs;
mod pages;
pub mod session;
mod views;

use super::AppState;
use super::auth::{ApiKeys, Role, RouteTemplate};
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use maud::Markup;
use serde::Deserialize;
use session::ConsoleSession;

/// Scripts and styles come from the master alone, no inline script or style runs,
/// and no other site may frame the console.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Longest API key the sign-in form accepts.
const MAX_KEY_LEN: usize = 512;

/// Who is looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub role: Role,
    /// The session's CSRF token (empty without a session: an open API, or a key sent
    /// as `Authorization`, needs none).
    pub csrf: String,
    pub signed_in: bool,
}

impl Viewer {
    /// May press pause/resume/cancel/retry, drain, submit, redeliver.
    pub fn can_control(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The viewer of a console page, or the answer instead of the page: sign in first
/// (303 to the sign-in page), or 403 for a worker key.
async fn viewer(req: &HttpRequest) -> Result<Viewer, HttpResponse> {
    let keys = req.app_data::<web::Data<ApiKeys>>().cloned().unwrap_or_default();
    if !keys.enabled() {
        return Ok(Viewer { role: Role::Admin, csrf: String::new(), signed_in: false });
    }
    let by_key =
        if req.headers().contains_key("authorization") { keys.caller(req).ok().and_then(|c| c.role) } else { None };
    let session: Option<ConsoleSession> = if by_key.is_none() { session::lookup(req).await } else { None };
    let (role, csrf, signed_in) = match (by_key, session) {
        (Some(role), _) => (role, String::new(), false),
        (None, Some(s)) => (s.role, s.csrf, true),
        (None, None) => {
            let next = format!("{}{}", req.path(), req.uri().query().map(|q| format!("?{q}")).unwrap_or_default());
            let to = format!("/ui/login?next={}", percent_encode(&next));
            return Err(HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish());
        }
    };
    if role == Role::Worker {
        return Err(page_error(403, "Worker keys cannot use the console; sign in with an admin or read-only key."));
    }
    Ok(Viewer { role, csrf, signed_in })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after signing in: a console path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.contains("//") && !n.contains('\\') && n.len() <= 2048 => n.to_string(),
        _ => "/ui".to_string(),
    }
}

fn html(status: u16, body: Markup) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.into_string())
}

fn page_error(status: u16, message: &str) -> HttpResponse {
    html(status, pages::error_page(status, message))
}

/// A whole page, or its `<main>` alone when the live script asks (`?fragment=1`).
fn respond(req: &HttpRequest, title: &str, page: &str, viewer: &Viewer, main: Markup) -> HttpResponse {
    if req.query_string().split('&').any(|p| p == "fragment=1") {
        return html(200, main);
    }
    html(200, pages::layout(title, page, viewer, main))
}

/// A state-changing form post must come from the console's own pages: a cross-site
/// `Origin` is refused (sign-in has no session, hence no CSRF token, to check yet).
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = req.connection_info().host().to_string();
    origin.split_once("://").map(|(_, h)| h == host).unwrap_or(false)
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

async fn login_page(req: HttpRequest, q: web::Query<NextQuery>) -> HttpResponse {
    let keys = req.app_data::<web::Data<ApiKeys>>().cloned().unwrap_or_default();
    if !keys.enabled() || session::lookup(&req).await.is_some() {
        let to = safe_next(q.next.as_deref());
        return HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish();
    }
    html(200, pages::login(&safe_next(q.next.as_deref()), None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    next: Option<String>,
}

async fn login(req: HttpRequest, state: web::Data<AppState>, form: web::Form<LoginForm>) -> HttpResponse {
    let next = safe_next(form.next.as_deref());
    if !same_origin(&req) {
        return page_error(403, "Sign-in must come from this console's own page.");
    }
    let keys = req.app_data::<web::Data<ApiKeys>>().cloned().unwrap_or_default();
    if !keys.enabled() {
        return HttpResponse::SeeOther().insert_header((header::LOCATION, next)).finish();
    }
    let presented = form.key.trim();
    let found = (presented.len() <= MAX_KEY_LEN).then(|| keys.role_of(presented)).flatten();
    match found {
        None => html(401, pages::login(&next, Some("That key is not one of this master's API keys."))),
        Some((Role::Worker, _)) => {
            html(403, pages::login(&next, Some("Worker keys cannot use the console; use an admin or read-only key.")))
        }
        Some((role, key)) => match session::start(&state, role, key).await {
            Ok(cookie) => HttpResponse::SeeOther().cookie(cookie).insert_header((header::LOCATION, next)).finish(),
            Err(e) => html(503, pages::login(&next, Some(&e.to_string()))),
        },
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

async fn logout(req: HttpRequest, state: web::Data<AppState>, form: web::Form<LogoutForm>) -> HttpResponse {
    let Some(s) = session::lookup(&req).await else {
        return HttpResponse::SeeOther().insert_header((header::LOCATION, "/ui/login")).finish();
    };
    let token_ok = form.csrf.len() == s.csrf.len() && {
        use subtle::ConstantTimeEq;
        bool::from(form.csrf.as_bytes().ct_eq(s.csrf.as_bytes()))
    };
    if !token_ok || !same_origin(&req) {
        return page_error(403, "Sign-out needs this session's CSRF token.");
    }
    if let Err(e) = session::end(&state, &s).await {
        return page_error(503, &e.to_string());
    }
    let mut gone = session::cookie(String::new(), &state);
    gone.make_removal();
    HttpResponse::SeeOther().cookie(gone).insert_header((header::LOCATION, "/ui/login")).finish()
}

/// `DELETE /sessions`: sign every console session out (admin).
#[utoipa::path(delete, path = "/sessions", responses((status = 200, description = "How many sessions were revoked: {\"revoked\": N}")))]
pub async fn revoke_sessions(state: web::Data<AppState>) -> crate::error::AppResult<HttpResponse> {
    let n = state.h.db.write(|c| crate::db::sessions::revoke_all(c, crate::db::now_micros())).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked": n })))
}

const APP_JS: &str = include_str!("../../../assets/ui/app.js");
const APP_CSS: &str = include_str!("../../../assets/ui/app.css");

async fn asset(name: web::Path<String>) -> HttpResponse {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return page_error(404, "No such asset."),
    };
    HttpResponse::Ok().content_type(kind).insert_header((header::CACHE_CONTROL, "no-cache")).body(body)
}

/// Page handlers: (viewer-checked) markup builders.
macro_rules! page {
    ($name:ident, $builder:path) => {
        async fn $name(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
            match viewer(&req).await {
                Ok(v) => $builder(&req, &state, &v).await,
                Err(answer) => answer,
            }
        }
    };
}

page!(overview, views::overview);
page!(job_list, jobs::list);
page!(job_detail, jobs::detail);
page!(submit, views::submit);
page!(nodes, views::nodes);
page!(webhooks, views::webhooks);

/// A console resource, recorded under its own template (like the API's), with the
/// console's security headers.
fn resource(
    path: &'static str,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
            req.extensions_mut().insert(RouteTemplate(path));
            next.call(req)
        }))
        .wrap(
            DefaultHeaders::new()
                .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("Referrer-Policy", "same-origin"))
                .add(("X-Frame-Options", "DENY")),
        )
        .default_service(web::route().to(super::error::method_not_allowed))
}

/// The console's routes (`/ui…`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ui").route(web::get().to(overview)))
        .service(resource("/ui/login").route(web::get().to(login_page)).route(web::post().to(login)))
        .service(resource("/ui/logout").route(web::post().to(logout)))
        .service(resource("/ui/jobs").route(web::get().to(job_list)))
        .service(resource("/ui/jobs/{id}").route(web::get().to(job_detail)))
        .service(resource("/ui/submit").route(web::get().to(submit)))
        .service(resource("/ui/nodes").route(web::get().to(nodes)))
        .service(resource("/ui/webhooks").route(web::get().to(webhooks)))
        .service(resource("/ui/assets/{name}").route(web::get().to(asset)));
}
