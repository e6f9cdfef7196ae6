//! Tables for people (comfy-table). Scripts use `--output json`, which is the API's JSON.

use crate::wire::{Job, JobOutput, Node};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    t
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn time(ts: &Option<String>) -> String {
    ts.as_deref().map(|t| t.replace('T', " ").chars().take(19).collect()).unwrap_or_else(|| "-".into())
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

pub fn jobs_table(jobs: &[Job]) -> Table {
    let mut t =
        table(&["Job #", "ID", "Scenario", "Status", "Queue", "Priority", "Progress", "Node", "Failure", "Created"]);
    for j in jobs {
        t.add_row(vec![
            j.sequence_number.to_string(),
            short(&j.id),
            j.scenario.clone(),
            j.status.to_string(),
            j.queue.to_string(),
            j.priority.to_string(),
            format!("{}%", j.progress),
            j.node_name.clone().or_else(|| j.node_id.as_deref().map(short)).unwrap_or_else(|| "-".into()),
            j.failure_reason.map_or_else(|| "-".into(), |r| r.to_string()),
            time(&Some(j.created_at.clone())),
        ]);
    }
    t
}

pub fn job_table(j: &Job) -> Table {
    let mut t = table(&["Field", "Value"]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_string(), v]);
    };
    row("Job #", j.sequence_number.to_string());
    row("ID", j.id.clone());
    row("Scenario", j.scenario.clone());
    row("Status", j.status.to_string());
    row("Queue / Priority", format!("{} / {}", j.queue, j.priority));
    row("Engine", j.engine.to_string());
    row("Progress", format!("{}%", j.progress));
    if let Some(d) = &j.progress_detail {
        row(
            "Speed",
            format!(
                "{} fps, {}x, ETA {}",
                d.fps.map(|f| format!("{f:.0}")).unwrap_or("-".into()),
                d.speed.map(|s| format!("{s:.2}")).unwrap_or("-".into()),
                d.eta_seconds.map(|e| format!("{e:.0}s")).unwrap_or("-".into())
            ),
        );
    }
    row("Attempt / Retries", format!("{} / {} of {}", j.attempt, j.retry_count, j.max_retries));
    row("Node", j.node_name.clone().or_else(|| j.node_id.clone()).unwrap_or_else(|| "-".into()));
    row("Created", time(&Some(j.created_at.clone())));
    row("Started", time(&j.started_at));
    row("Completed", time(&j.completed_at));
    if let Some(r) = &j.queue_reason {
        row("Waiting", r.clone());
    }
    if let Some(e) = &j.error {
        row("Error", e.clone());
    }
    if let Some(f) = &j.failure_reason {
        row("Failure Reason", f.as_str().replace('_', " "));
    }
    for (k, v) in [("QoE", j.qoe_score), ("VMAF", j.vmaf_score), ("Energy (J)", j.energy_joules)] {
        if let Some(v) = v {
            row(k, format!("{v:.2}"));
        }
    }
    if let Some(m) = &j.metrics
        && let Some(p) = m.get("psnr_db").and_then(|v| v.as_f64())
    {
        row("PSNR (dB)", format!("{p:.2}"));
    }
    row("Parameters", serde_json::to_string_pretty(&j.parameters).unwrap_or_default());
    t
}

pub fn nodes_table(nodes: &[Node]) -> Table {
    let mut t = table(&["Name", "ID", "Status", "CPU", "RAM", "GPU", "Encoders", "Jobs"]);
    for n in nodes {
        t.add_row(vec![
            n.name.clone(),
            short(&n.id),
            n.status.to_string(),
            format!("{} ({})", n.cpu_model, n.cpu_threads),
            gib(n.ram_total_bytes),
            if n.gpus.is_empty() {
                if n.has_gpu { "Yes".into() } else { "No".into() }
            } else {
                n.gpus.iter().map(|g| g.name.clone()).collect::<Vec<_>>().join(", ")
            },
            n.encoders.as_ref().map(|e| e.join(" ")).unwrap_or_else(|| "not probed".into()),
            format!("{}/{}", n.running_jobs.len(), n.max_concurrent_jobs),
        ]);
    }
    t
}

pub fn node_table(n: &Node) -> Table {
    let mut t = table(&["Property", "Value"]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_string(), v]);
    };
    row("Node ID", n.id.clone());
    row("Name", n.name.clone());
    row("Address", n.address.clone());
    row("Status", n.status.to_string());
    row("CPU", format!("{} ({} threads), load {:.0}%", n.cpu_model, n.cpu_threads, n.cpu_load_percent));
    row("RAM", format!("{} total, {} free", gib(n.ram_total_bytes), gib(n.ram_free_bytes)));
    if let Some(d) = n.disk_free_bytes {
        row("Disk free", gib(d));
    }
    if n.gpus.is_empty() {
        row("GPU", "None".into());
    }
    for g in &n.gpus {
        let mut parts = vec![format!("#{} {}", g.index, g.name), gib(g.memory_total_bytes)];
        if let Some(u) = g.utilization_percent {
            parts.push(format!("{u:.0}% busy"));
        }
        if let Some(tc) = g.temperature_celsius {
            parts.push(format!("{tc:.0}°C"));
        }
        if let Some(p) = g.power_watts {
            parts.push(format!("{p:.0} W"));
        }
        if let Some(s) = g.encoder_sessions {
            parts.push(format!("{s} encoder sessions"));
        }
        row("GPU", parts.join(", "));
    }
    row(
        "Encoders (probed)",
        n.encoders.as_ref().map(|e| e.join(", ")).unwrap_or_else(|| "not probed (seed agent)".into()),
    );
    row("ffmpeg", n.ffmpeg_version.clone().unwrap_or_else(|| "-".into()));
    row("GStreamer", n.gstreamer_version.clone().unwrap_or_else(|| "-".into()));
    row("Slots", format!("{}/{} busy", n.running_jobs.len(), n.max_concurrent_jobs));
    row("Running jobs", if n.running_jobs.is_empty() { "None".into() } else { n.running_jobs.join("\n") });
    row("Last heartbeat", n.last_heartbeat.replace('T', " ").chars().take(19).collect());
    row("Registered", n.registered_at.replace('T', " ").chars().take(19).collect());
    t
}

pub fn outputs_table(outputs: &[JobOutput]) -> Table {
    let mut t = table(&["Name", "Bytes", "Type", "SHA-256", "Attempt", "Stored"]);
    for o in outputs {
        t.add_row(vec![
            o.name.clone(),
            o.bytes.to_string(),
            o.content_type.clone(),
            o.sha256.chars().take(16).collect::<String>(),
            o.attempt.to_string(),
            time(&Some(o.created_at.clone())),
        ]);
    }
    t
}
