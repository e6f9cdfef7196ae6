//! Job graphs at the API: a submitted job that waits for others (`after`), a package
//! job (a parent plus its probe child; the GraphActor plans the rest once the probe
//! ran), a parent's view (children, derived progress, the package's outputs) and
//! operators' actions on graph jobs.

use super::AppState;
use crate::actors::messages::{ControlGraph, JobStateChanged, TrackGraph, TrackedJob};
use crate::actors::scheduler::queued_job_from_row;
use crate::db::graph::{self as db_graph, GraphRow};
use crate::db::jobs::JobRow;
use crate::domain::graph::{MAX_AFTER, weighted_progress};
use crate::domain::ladder::Stage;
use crate::domain::state::{JobState, UserAction};
use crate::error::{AppError, AppResult};
use crate::wire::{ChildSummary, ControlResponse, Job};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// How a submitted job joins a graph.
pub enum GraphShape {
    /// It waits for these jobs.
    After(Vec<Uuid>),
    /// A package or a chunked encode: a parent and its probe child.
    Package,
    /// A parent of these children (checked, in an order where each follows what it
    /// waits for inside the graph).
    Children(Vec<CheckedChild>),
}

/// A submitted child, checked.
pub struct CheckedChild {
    pub reference: String,
    pub params: Map<String, Value>,
    /// Refs inside the graph and ids outside it.
    pub after: Vec<String>,
}

/// Check a graph's children: their parameters (as any job's), their refs, what they
/// wait for (refs of the graph or existing jobs), and that they wait in no cycle.
pub async fn checked_children(
    state: &AppState,
    children: &[crate::wire::ChildRequest],
    engine: crate::domain::params::Engine,
) -> AppResult<Vec<CheckedChild>> {
    use crate::domain::graph::{MAX_CHILDREN, order};
    let bad = |m: String| AppError::bad_request("invalid_graph", m);
    if children.len() > MAX_CHILDREN {
        return Err(bad(format!("a graph has at most {MAX_CHILDREN} children")));
    }
    let mut checked = Vec::new();
    for (i, c) in children.iter().enumerate() {
        let reference = c.reference.clone().unwrap_or_else(|| format!("c{i}"));
        let ok = !reference.is_empty()
            && reference.len() <= 64
            && reference.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !ok {
            return Err(bad(format!("child {i}: ref must be 1 to 64 letters, digits, '_' or '-'")));
        }
        if c.after.len() > MAX_AFTER {
            return Err(bad(format!("child {reference} waits for more than {MAX_AFTER} jobs")));
        }
        let (spec, params, _) = super::admission::checked_parameters(
            state,
            c.parameters.clone().unwrap_or_default(),
            c.template.as_deref(),
            engine,
        )
        .await
        .map_err(|e| match e {
            AppError::BadRequest { code, message } => {
                AppError::BadRequest { code, message: format!("child {reference}: {message}") }
            }
            e => e,
        })?;
        if spec.package.is_some() || spec.chunking.is_some() {
            return Err(bad(format!(
                "child {reference}: a package or chunked job cannot be a child (graphs do not nest)"
            )));
        }
        checked.push(CheckedChild { reference, params, after: c.after.clone() });
    }
    let refs: Vec<&str> = checked.iter().map(|c| c.reference.as_str()).collect();
    let external: Vec<String> =
        checked.iter().flat_map(|c| c.after.iter()).filter(|a| !refs.contains(&a.as_str())).cloned().collect();
    // Outside the graph only existing job ids may be named (refused with their names).
    let known: Vec<String> = match external.iter().filter(|a| Uuid::parse_str(a).is_ok()).count() {
        0 => Vec::new(),
        _ => {
            let ids: Vec<String> = external.iter().filter(|a| Uuid::parse_str(a).is_ok()).cloned().collect();
            state.h.db.read(move |c| db_graph::states(c, &ids)).await?.into_keys().collect()
        }
    };
    let nodes: Vec<(String, Vec<String>)> = checked.iter().map(|c| (c.reference.clone(), c.after.clone())).collect();
    let ordered = order(&nodes, |r| known.iter().any(|k| k == r)).map_err(|e| bad(e.to_string()))?;
    let mut slots: Vec<Option<CheckedChild>> = checked.into_iter().map(Some).collect();
    Ok(ordered.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// The `after` list of a submission: existing job ids, at most [`MAX_AFTER`]; unknown
/// ids are refused (`unknown_dependency`). A cycle cannot form: a job only waits for
/// jobs that already exist.
pub async fn check_after(state: &AppState, after: &[String]) -> AppResult<Vec<Uuid>> {
    if after.len() > MAX_AFTER {
        return Err(AppError::bad_request("invalid_field", format!("after lists at most {MAX_AFTER} jobs")));
    }
    let mut ids = Vec::new();
    for a in after {
        let id = Uuid::parse_str(a)
            .map_err(|_| AppError::bad_request("unknown_dependency", format!("after: '{a:.64}' is not a job id")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let found = state.h.db.read(move |c| db_graph::states(c, &keys)).await?;
    if let Some(missing) = ids.iter().find(|i| !found.contains_key(&i.to_string())) {
        return Err(AppError::bad_request("unknown_dependency", format!("after: no job {missing}")));
    }
    Ok(ids)
}

/// Store a graph job (and a package's probe child) in one transaction, then hand it to
/// the GraphActor. Returns the stored row and whether it was created (an idempotency
/// key may name an existing job).
pub async fn insert_graph_job(state: &AppState, new: JobRow, shape: GraphShape) -> AppResult<(JobRow, bool)> {
    let mut members: Vec<JobRow> = Vec::new();
    let mut links = Vec::new();
    match &shape {
        GraphShape::After(after) => links.push(GraphRow {
            job_id: new.id.clone(),
            parent_id: None,
            after_ids: json!(after.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string(),
            is_parent: false,
            stage: "encode".into(),
            label: String::new(),
            weight: 1.0,
        }),
        GraphShape::Children(children) => {
            links.push(GraphRow::parent(&new.id, ""));
            let ids: std::collections::HashMap<&str, Uuid> =
                children.iter().map(|c| (c.reference.as_str(), Uuid::now_v7())).collect();
            for c in children {
                let id = ids[c.reference.as_str()];
                let after: Vec<String> =
                    c.after.iter().map(|a| ids.get(a.as_str()).map_or(a.clone(), Uuid::to_string)).collect();
                let mut params = c.params.clone();
                params.insert("label".into(), c.reference.clone().into());
                members.push(db_graph::child_job(&new, id, params));
                links.push(GraphRow {
                    job_id: id.to_string(),
                    parent_id: Some(new.id.clone()),
                    after_ids: json!(after).to_string(),
                    is_parent: false,
                    stage: "encode".into(),
                    label: c.reference.clone(),
                    weight: 1.0,
                });
            }
        }
        GraphShape::Package => {
            let params: Map<String, Value> = serde_json::from_str(&new.parameters).unwrap_or_default();
            let mut p = Map::new();
            for k in ["input", "timeout_seconds"] {
                if let Some(v) = params.get(k) {
                    p.insert(k.into(), v.clone());
                }
            }
            p.insert("stage".into(), Stage::Probe.as_str().into());
            p.insert("label".into(), "probe".into());
            // A chunked encode cuts on the source's keyframes (a ladder on its segments).
            let chunked = params.get("chunking").is_some_and(|c| !c.is_null());
            if chunked && params.get("package").is_none() {
                p.insert("probe_keyframes".into(), true.into());
            }
            let id = Uuid::now_v7();
            members.push(db_graph::child_job(&new, id, p));
            links.push(GraphRow::parent(&new.id, if chunked { "chunked" } else { "package" }));
            links.push(GraphRow {
                job_id: id.to_string(),
                parent_id: Some(new.id.clone()),
                after_ids: "[]".into(),
                is_parent: false,
                stage: Stage::Probe.as_str().into(),
                label: "probe".into(),
                weight: 0.5,
            });
        }
    }
    let after_of: std::collections::HashMap<String, Vec<Uuid>> = links
        .iter()
        .map(|l| (l.job_id.clone(), l.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect()))
        .collect();
    let (row, created, members) = state
        .h
        .db
        .write(move |c| {
            let since = crate::db::events::head(c)?;
            let (row, created) = crate::db::jobs::insert(c, &new)?;
            if !created {
                return Ok((row, false, Vec::new()));
            }
            let members = crate::db::jobs::insert_many(c, &members)?;
            db_graph::insert(c, since, &links)?;
            Ok((row, true, members))
        })
        .await?;
    if !created {
        return Ok((row, false));
    }
    let changed = |r: &JobRow| JobStateChanged {
        from: None,
        to: r.status,
        queue: r.queue,
        priority: r.priority,
        engine: r.engine,
    };
    state.h.metrics.do_send(changed(&row));
    match shape {
        GraphShape::After(after) => {
            let job = TrackedJob { queued: queued_job_from_row(&row), state: row.status, parent: None, after };
            state.h.graph.do_send(TrackGraph { parent: None, jobs: vec![job], expand_on: None });
        }
        shape => {
            let jobs: Vec<TrackedJob> = members
                .iter()
                .map(|m| {
                    state.h.metrics.do_send(changed(m));
                    TrackedJob {
                        queued: queued_job_from_row(m),
                        state: m.status,
                        parent: Some(row.uuid()),
                        after: after_of.get(&m.id).cloned().unwrap_or_default(),
                    }
                })
                .collect();
            let expand_on = matches!(shape, GraphShape::Package).then(|| members[0].uuid());
            state.h.graph.do_send(TrackGraph { parent: Some(row.uuid()), jobs, expand_on });
        }
    }
    Ok((row, true))
}

/// A graph job's place in its graph, for `GET /jobs/{id}`: parent, dependencies, and
/// for a parent its children, its progress (weighted by expected work) and the
/// package's outputs.
pub async fn enrich(state: &AppState, job: &mut Job) -> AppResult<()> {
    let key = job.id.clone();
    let (link, children) = state
        .h
        .db
        .read(move |c| {
            let link = db_graph::get(c, &key)?;
            let children = match &link {
                Some(l) if l.is_parent => db_graph::children(c, &key)?,
                _ => Vec::new(),
            };
            Ok((link, children))
        })
        .await?;
    let Some(link) = link else { return Ok(()) };
    job.parent_id = link.parent_id.clone();
    let after = link.after();
    job.after = (!after.is_empty()).then_some(after);
    if !link.is_parent {
        return Ok(());
    }
    let weights: Vec<(f64, f64, JobState)> = children.iter().map(|(g, j)| (g.weight, j.progress, j.status)).collect();
    if !job.status.is_terminal() {
        job.progress = weighted_progress(&weights).floor() as i64;
    }
    job.children = Some(
        children
            .iter()
            .map(|(g, j)| ChildSummary {
                id: j.id.clone(),
                stage: g.stage.clone(),
                label: (!g.label.is_empty()).then(|| g.label.clone()),
                status: j.status,
                progress: if j.status == JobState::Completed { 100 } else { j.progress.floor() as i64 },
                node_id: j.node_id.clone(),
                started_at: j.started_at.map(crate::wire::rfc3339),
                completed_at: j.completed_at.map(crate::wire::rfc3339),
                failure_reason: j.failure_reason,
            })
            .collect(),
    );
    Ok(())
}

/// The jobs whose outputs a parent publishes (its package and thumbnail steps).
pub async fn publishing_children(state: &AppState, parent: &str) -> AppResult<Option<Vec<String>>> {
    let key = parent.to_string();
    let (link, children) =
        state.h.db.read(move |c| Ok((db_graph::get(c, &key)?, db_graph::children(c, &key)?))).await?;
    if !link.is_some_and(|l| l.is_parent) {
        return Ok(None);
    }
    Ok(Some(
        children
            .into_iter()
            .filter(|(g, _)| Stage::parse(&g.stage).is_some_and(Stage::publishes))
            .map(|(g, _)| g.job_id)
            .collect(),
    ))
}

/// Whether an operator's action on `id` is the graph actor's: any action on a parent,
/// a retry of any graph job (what waits for it must wait again).
pub async fn control(state: &AppState, id: Uuid, action: UserAction) -> AppResult<Option<ControlResponse>> {
    let key = id.to_string();
    let link = state.h.db.read(move |c| db_graph::get(c, &key)).await?;
    match link {
        Some(l) if l.is_parent || action == UserAction::Retry => {
            Ok(Some(state.h.graph.send(ControlGraph { id, action }).await??))
        }
        _ => Ok(None),
    }
}
