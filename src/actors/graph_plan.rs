//! What a probed parent turns into, as rows for the graph actor to store: a package's
//! ladder (`domain::ladder`, its renditions chunked when the job asks), or a chunked
//! encode's chunks, audio and stitch (`domain::chunking`). The decisions are pure
//! domain functions; this only reads the parent's parameters and writes the rows.

use crate::db::graph::{self as db_graph, GraphRow};
use crate::db::jobs::JobRow;
use crate::domain::chunking::{self, ChunkingSpec, Source};
use crate::domain::ladder::{self, PackageSpec, Stage};
use crate::domain::media::InputInfo;
use crate::domain::placement::Requirements;
use serde_json::{Map, Value};
use std::collections::HashMap;
use uuid::Uuid;

fn params_of(parent: &JobRow) -> Result<Map<String, Value>, String> {
    serde_json::from_str(&parent.parameters).map_err(|e| e.to_string())
}

/// What a node needs to take the parent's encode children (auto chunking counts them).
pub fn requirements(parent: &JobRow) -> Option<Requirements> {
    let params = params_of(parent).ok()?;
    params.get("chunking")?;
    crate::domain::params::parse_job_spec(&params, parent.engine).ok().map(|s| Requirements::from_spec(&s))
}

/// The children a parent's probe result asks for, as rows to insert. `workers`: how
/// many nodes could take a chunk now.
pub fn plan_children(
    parent: &JobRow,
    info: Option<InputInfo>,
    workers: usize,
) -> Result<(Vec<JobRow>, Vec<GraphRow>), String> {
    let params = params_of(parent)?;
    let input = params.get("input").and_then(|v| v.as_str()).ok_or("the parent has no input")?;
    let info = info.ok_or("the probe found nothing to read in the input")?;
    let chunking = match params.get("chunking") {
        Some(v) => ChunkingSpec::parse(v)?,
        None => None,
    };
    let seconds = |k: &str| params.get(k).and_then(Value::as_f64);
    let planned = match params.get("package") {
        Some(package) => {
            let spec = PackageSpec::parse(package)?;
            let planned = ladder::plan(&spec, input, &info)?;
            let src = Source { input, info: &info, start_seconds: 0.0, max_seconds: None };
            match chunking.filter(|c| c.applies(src.duration(), workers)) {
                Some(c) => chunking::chunk_renditions(planned, &c, spec.segment_seconds, &src),
                None => planned,
            }
        }
        None => {
            let spec = chunking.ok_or("the parent has neither a package nor chunking")?;
            let src = Source {
                input,
                info: &info,
                start_seconds: seconds("start_seconds").unwrap_or(0.0),
                max_seconds: seconds("duration").or(seconds("duration_seconds")),
            };
            chunking::plan(&spec, &params, &src, workers)?
        }
    };
    let ids: HashMap<String, Uuid> = planned.iter().map(|c| (c.label.clone(), Uuid::now_v7())).collect();
    let mut jobs = Vec::new();
    let mut links = Vec::new();
    for c in planned {
        let id = ids[&c.label];
        let mut p = c.params.clone();
        p.insert("stage".into(), c.stage.as_str().into());
        p.insert("label".into(), c.label.clone().into());
        if !c.reads.is_empty() {
            let inputs: Vec<String> = c.reads.iter().map(|(l, name)| format!("artifact://{}/{name}", ids[l])).collect();
            p.insert("inputs".into(), inputs.into());
        }
        // Published steps write where the job asked; the other steps' outputs stay in
        // the master's store for the steps after them.
        if c.stage.publishes()
            && let Some(d) = params.get("destination")
        {
            p.insert("destination".into(), d.clone());
        }
        for k in ["preset", "timeout_seconds", "resource_limits", "realtime", "threads"] {
            if let Some(v) = params.get(k).filter(|_| matches!(c.stage, Stage::Rendition | Stage::Chunk)) {
                p.insert(k.into(), v.clone());
            }
        }
        let after: Vec<String> = c.after.iter().map(|l| ids[l].to_string()).collect();
        links.push(GraphRow {
            job_id: id.to_string(),
            parent_id: Some(parent.id.clone()),
            after_ids: serde_json::to_string(&after).unwrap_or_else(|_| "[]".into()),
            is_parent: false,
            stage: c.stage.as_str().into(),
            label: c.label.clone(),
            weight: c.weight,
        });
        jobs.push(db_graph::child_job(parent, id, p));
    }
    Ok((jobs, links))
}
