//! `/templates`: named, versioned job templates (admin writes, read-only reads). A
//! job names one with `template`; its own parameters override the template's and the
//! resolved parameters (with the template's name and version) are stored on the job,
//! so a later edit never changes a submitted job. Built-ins ship with the binary and
//! cannot be replaced or deleted.

use super::AppState;
use crate::db::templates as db_templates;
use crate::domain::templates::{self as tpl, DESCRIPTION_MAX};
use crate::error::{AppError, AppResult};
use crate::wire::{Template, TemplateRequest};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VersionQuery {
    pub version: Option<i32>,
}

fn from_row(r: db_templates::TemplateRow) -> Template {
    Template {
        name: r.name,
        version: r.version,
        builtin: false,
        description: r.description,
        parameters: serde_json::from_str(&r.body).unwrap_or_default(),
    }
}

fn builtin_view(name: &str) -> Option<Template> {
    tpl::builtin(name).map(|(d, p)| Template {
        name: name.into(),
        version: 0,
        builtin: true,
        description: d.into(),
        parameters: p.as_object().cloned().unwrap_or_default(),
    })
}

async fn find(state: &AppState, name: &str, version: Option<i32>) -> AppResult<Template> {
    // A name no template can have is never looked up (nor quoted back).
    tpl::check_name(name).map_err(|m| AppError::bad_request("invalid_template", m))?;
    if let Some(t) = builtin_view(name).filter(|_| version.is_none_or(|v| v == 0)) {
        return Ok(t);
    }
    let n = name.to_string();
    state.h.db.read(move |c| db_templates::get(c, &n, version)).await?.map(from_row).ok_or_else(|| AppError::NotFound {
        code: "template_not_found",
        message: format!("no template '{name:.64}'{}", version.map(|v| format!(" version {v}")).unwrap_or_default()),
    })
}

/// A job's parameters from template `name` and its own (`template` and
/// `template_version` recorded in them).
pub async fn resolve(state: &AppState, name: &str, own: Map<String, Value>) -> AppResult<Map<String, Value>> {
    let t = find(state, name, None).await?;
    let mut p = tpl::apply(&t.parameters, own);
    p.insert("template".into(), t.name.into());
    p.insert("template_version".into(), t.version.into());
    Ok(p)
}

/// Check a template's name, description and parameters (a valid job once given an input).
fn check(name: &str, r: &TemplateRequest) -> AppResult<()> {
    tpl::check_name(name).map_err(|m| AppError::bad_request("invalid_template", m))?;
    if let Some(d) = &r.description {
        crate::domain::limits::check_text("description", d, DESCRIPTION_MAX)
            .map_err(|e| AppError::bad_request("invalid_template", e.message))?;
    }
    let mut p = r.parameters.clone();
    p.entry("input").or_insert_with(|| "template-check.mp4".into());
    for k in ["stage", "packaging", "inputs", "template", "template_version"] {
        if p.contains_key(k) {
            return Err(AppError::bad_request("invalid_template", format!("a template cannot set '{k}'")));
        }
    }
    crate::domain::params::parse_job_spec(&p, crate::domain::params::Engine::Auto)
        .map_err(|e| AppError::bad_request("invalid_template", e.0))?;
    Ok(())
}

async fn store(state: &AppState, name: String, r: TemplateRequest) -> AppResult<Template> {
    if tpl::builtin(&name).is_some() {
        return Err(AppError::Conflict {
            code: "template_builtin",
            message: format!("'{name}' is a built-in template; choose another name"),
        });
    }
    check(&name, &r)?;
    let body = Value::Object(r.parameters).to_string();
    let desc = r.description.unwrap_or_default();
    let row = state.h.db.write(move |c| db_templates::put(c, &name, &desc, &body, tpl::MAX_STORED)).await?;
    Ok(from_row(row))
}

#[utoipa::path(get, path = "/templates", responses((status = 200, body = [Template])))]
pub async fn list_templates(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(all_templates(&state).await?))
}

/// The built-in templates, then the stored ones (latest versions).
pub async fn all_templates(state: &AppState) -> AppResult<Vec<Template>> {
    let mut all: Vec<Template> = tpl::builtins().iter().filter_map(|(n, _, _)| builtin_view(n)).collect();
    all.extend(state.h.db.read(db_templates::list).await?.into_iter().map(from_row));
    Ok(all)
}

#[utoipa::path(post, path = "/templates", request_body = TemplateRequest,
    responses((status = 201, body = Template), (status = 400, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
pub async fn create_template(state: web::Data<AppState>, body: web::Json<TemplateRequest>) -> AppResult<HttpResponse> {
    let r = body.into_inner();
    let name = r.name.clone().ok_or_else(|| AppError::bad_request("invalid_template", "name is required"))?;
    Ok(HttpResponse::Created().json(store(&state, name, r).await?))
}

#[utoipa::path(get, path = "/templates/{name}", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = Template), (status = 404, body = crate::wire::ErrorBody)))]
pub async fn get_template(
    state: web::Data<AppState>,
    name: web::Path<String>,
    q: web::Query<VersionQuery>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(find(&state, &name, q.version).await?))
}

#[utoipa::path(put, path = "/templates/{name}", params(("name" = String, Path)), request_body = TemplateRequest,
    responses((status = 200, body = Template), (status = 400, body = crate::wire::ErrorBody)))]
pub async fn update_template(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<TemplateRequest>,
) -> AppResult<HttpResponse> {
    let r = body.into_inner();
    if r.name.as_deref().is_some_and(|n| n != name.as_str()) {
        return Err(AppError::bad_request("invalid_template", "the body's name differs from the path's"));
    }
    Ok(HttpResponse::Ok().json(store(&state, name.into_inner(), r).await?))
}

#[utoipa::path(delete, path = "/templates/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
pub async fn delete_template(state: web::Data<AppState>, name: web::Path<String>) -> AppResult<HttpResponse> {
    if tpl::builtin(&name).is_some() {
        return Err(AppError::Conflict {
            code: "template_builtin",
            message: "built-in templates cannot be deleted".into(),
        });
    }
    tpl::check_name(&name).map_err(|m| AppError::bad_request("invalid_template", m))?;
    let n = name.clone();
    if state.h.db.write(move |c| db_templates::delete(c, &n)).await? {
        Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": name.as_str()})))
    } else {
        Err(AppError::NotFound { code: "template_not_found", message: format!("no template '{:.64}'", name.as_str()) })
    }
}
