//! A worker's registration: its id checked (or assigned; a seed agent without one is
//! known by its address), its node token verified, issued or rotated — a node bound to
//! a token re-registers only with it — and its hardware and capabilities stored.

use super::*;

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// `http://host:port/x` → `host`, as the seed named nodes.
fn host_of(address: &str) -> String {
    let a = address.split("://").last().unwrap_or(address);
    let a = a.split('/').next().unwrap_or(a);
    match a.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a.to_string(),
    }
}

impl Handler<RegisterNode> for NodeSupervisor {
    type Result = ResponseActFuture<Self, AppResult<Registered>>;

    fn handle(
        &mut self,
        RegisterNode { registration: reg, token: presented }: RegisterNode,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let fail = |e| -> Self::Result { Box::pin(actix::fut::ready(Err(e))) };
        if let Some(id) = &reg.node_id
            && !valid_node_id(id)
        {
            return fail(AppError::bad_request(
                "invalid_node_id",
                "node_id must be 1–128 characters of letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if reg.node_id.is_none() && reg.address.trim().is_empty() {
            return fail(AppError::bad_request("invalid_registration", "give a node_id or an address"));
        }
        let max = reg.max_concurrent_jobs.unwrap_or(1);
        if !(1..=1024).contains(&max) {
            return fail(AppError::bad_request(
                "invalid_registration",
                "max_concurrent_jobs must be between 1 and 1024",
            ));
        }
        if reg.cpu_threads > 1_000_000 || reg.ram_total_bytes > i64::MAX as u64 {
            return fail(AppError::bad_request("invalid_registration", "hardware figures out of range"));
        }
        if let Err(e) = crate::domain::limits::check_registration(&reg) {
            return fail(AppError::bad_request("invalid_registration", e.message));
        }
        // Stable id from the worker; a seed agent (no id) is keyed by its address.
        let existing_id = match &reg.node_id {
            Some(id) => self.nodes.contains_key(id).then(|| id.clone()),
            None => self.nodes.iter().find(|(_, n)| n.row.address == reg.address).map(|(id, _)| id.clone()),
        };
        // A node bound to a token re-registers only with it (or the one before it),
        // so nobody holding the shared worker key can take its identity over.
        let bound =
            existing_id.as_ref().and_then(|id| self.nodes.get(id)).and_then(|n| n.token.map(|t| (t, n.previous_token)));
        if let Some((current, before)) = bound {
            let shown = presented.as_deref().map(credentials::digest);
            let ok = shown.is_some_and(|d| {
                credentials::digests_equal(&d, &current) || before.is_some_and(|b| credentials::digests_equal(&d, &b))
            });
            if !ok {
                let id = existing_id.clone().unwrap_or_default();
                return fail(AppError::node_token(&id, credentials::TokenRefusal::Invalid));
            }
        }
        if self.require_tokens && !reg.request_node_token {
            let id = existing_id.clone().or(reg.node_id.clone()).unwrap_or_else(|| reg.address.clone());
            return fail(AppError::node_token(&id, credentials::TokenRefusal::Required));
        }
        // A new token at every registration that asks for one (rotation); a token-bound
        // node that does not ask keeps the one it has.
        let issued = reg.request_node_token.then(credentials::new_token);
        let token = issued.as_deref().map(credentials::digest).or(bound.map(|b| b.0));
        let previous_token = if issued.is_some() { bound.map(|b| b.0) } else { bound.and_then(|b| b.1) };
        let created = existing_id.is_none();
        let id = existing_id.or(reg.node_id.clone()).unwrap_or_else(|| Uuid::new_v4().to_string());
        let now = now_micros();
        let previous = self.nodes.get(&id);
        let hw = Hardware {
            encoders: reg.encoders.clone(),
            gpus: reg.gpus.clone(),
            ffmpeg_version: reg.ffmpeg_version.clone(),
            gstreamer_version: reg.gstreamer_version.clone(),
            disk_free_bytes: reg.disk_free_bytes,
            rtmp_base: reg.rtmp_base.clone(),
            gstreamer_rtmp: reg.gstreamer_rtmp && reg.gstreamer_version.is_some(),
        };
        let row = NodeRow {
            id: id.clone(),
            name: reg.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| host_of(&reg.address)),
            address: reg.address.clone(),
            node_type: reg.node_type.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "server".into()),
            cpu_threads: reg.cpu_threads as i32,
            cpu_model: reg.cpu_model.clone(),
            cpu_load_percent: reg.cpu_load_percent.unwrap_or(0.0),
            has_gpu: reg.has_gpu || !reg.gpus.is_empty(),
            gpu_type: reg.gpu_type.clone().or_else(|| reg.gpus.first().map(|g| g.name.clone())).unwrap_or_default(),
            // Seed agents spell capabilities `nvenc_h264`; stored as the encoder they name.
            gpu_capabilities: serde_json::to_string(
                &reg.gpu_capabilities.iter().map(|c| capability_as_encoder(c)).collect::<Vec<_>>(),
            )
            .unwrap_or_else(|_| "[]".into()),
            ram_total_bytes: reg.ram_total_bytes as i64,
            ram_free_bytes: reg.ram_free_bytes.unwrap_or(0) as i64,
            labels: serde_json::Value::Object(reg.labels.clone()).to_string(),
            status: NodeState::Available,
            draining: previous.map(|p| p.row.draining).unwrap_or(false),
            max_concurrent_jobs: max as i32,
            hardware: serde_json::to_string(&hw).unwrap_or_else(|_| "{}".into()),
            last_heartbeat: now,
            registered_at: previous.map(|p| p.row.registered_at).unwrap_or(now),
            token_hash: token.as_ref().map(credentials::to_hex),
            heartbeat_interval_ms: reg.heartbeat_interval_seconds.and_then(|s| heartbeat_interval_ms(s).ok()),
        };
        let db = self.db.clone();
        let persisted = row.clone();
        let shown = NodeEntry::new(row.clone(), hw.clone(), Instant::now(), false).to_wire();
        let event = db_events::node_event("node.registered", &id, serde_json::to_value(shown).unwrap_or_default());
        let write = async move {
            db.write(move |c| {
                db_nodes::upsert(c, &persisted)?;
                db_events::append(c, &[event])
            })
            .await
        };
        Box::pin(write.into_actor(self).map(move |res, act, _| {
            res?;
            let deadline = Instant::now() + loss_window(row.heartbeat_interval_ms);
            let entry =
                act.nodes.entry(id.clone()).or_insert_with(|| NodeEntry::new(row.clone(), hw.clone(), deadline, false));
            entry.gpu_capabilities = serde_json::from_str(&row.gpu_capabilities).unwrap_or_default();
            entry.labels = serde_json::from_str(&row.labels).unwrap_or_default();
            entry.row = row;
            entry.hw = hw;
            entry.deadline = deadline;
            entry.offline = false;
            entry.token = token;
            entry.previous_token = previous_token;
            let node = entry.to_wire();
            act.publish(&id);
            Ok(Registered { node, created, token: issued })
        }))
    }
}
