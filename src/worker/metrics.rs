//! The worker's own endpoint (`--metrics-port`, default 9091): `/metrics`, `/health`
//! and `/ready`. Every series carries `node_id` equal to the master's node id, so
//! master and worker series join.

use crate::domain::params::KNOWN_ENCODERS;
use crate::wire::GpuInfo;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::{Encoder, Gauge, GaugeVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::path::PathBuf;

#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    pub cpu_usage: Gauge,
    pub memory_used: IntGauge,
    pub memory_total: IntGauge,
    pub disk_free: IntGauge,
    pub active_jobs: IntGauge,
    pub slots: IntGauge,
    pub jobs_completed: IntCounter,
    pub jobs_failed: IntCounter,
    pub jobs_canceled: IntCounter,
    pub heartbeats: IntCounter,
    pub encoders: IntGaugeVec,
    pub gpu_util: GaugeVec,
    pub gpu_mem_used: GaugeVec,
    pub gpu_mem_total: GaugeVec,
    pub gpu_power: GaugeVec,
    pub gpu_temp: GaugeVec,
    pub gpu_energy: GaugeVec,
    pub gpu_sessions: GaugeVec,
    pub gpus: IntGauge,
}

impl WorkerMetrics {
    pub fn new(node_id: &str) -> Self {
        let r = Registry::new_custom(None, Some([("node_id".to_string(), node_id.to_string())].into_iter().collect()))
            .expect("registry");
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        }
        let gv = |r: &Registry, n: &str, h: &str| reg(r, GaugeVec::new(Opts::new(n, h), &["gpu"]).unwrap());
        WorkerMetrics {
            cpu_usage: reg(&r, Gauge::new("ffrtmp_worker_cpu_usage_ratio", "CPU busy ratio, 0–1").unwrap()),
            memory_used: reg(&r, IntGauge::new("ffrtmp_worker_memory_used_bytes", "Used RAM").unwrap()),
            memory_total: reg(&r, IntGauge::new("ffrtmp_worker_memory_total_bytes", "Total RAM").unwrap()),
            disk_free: reg(&r, IntGauge::new("ffrtmp_worker_disk_free_bytes", "Free space in the work dir").unwrap()),
            active_jobs: reg(&r, IntGauge::new("ffrtmp_worker_active_jobs", "Encodes running now").unwrap()),
            slots: reg(&r, IntGauge::new("ffrtmp_worker_slots", "Concurrent job slots").unwrap()),
            jobs_completed: reg(
                &r,
                IntCounter::new("ffrtmp_worker_jobs_completed_total", "Jobs this worker completed").unwrap(),
            ),
            jobs_failed: reg(
                &r,
                IntCounter::new("ffrtmp_worker_jobs_failed_total", "Jobs that failed on this worker").unwrap(),
            ),
            jobs_canceled: reg(
                &r,
                IntCounter::new("ffrtmp_worker_jobs_canceled_total", "Jobs canceled on this worker").unwrap(),
            ),
            heartbeats: reg(
                &r,
                IntCounter::new("ffrtmp_worker_heartbeats_total", "Heartbeats the master accepted").unwrap(),
            ),
            encoders: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("ffrtmp_worker_encoder_available", "1 when the encoder's probe encode succeeded"),
                    &["encoder"],
                )
                .unwrap(),
            ),
            gpu_util: gv(&r, "ffrtmp_worker_gpu_utilization_ratio", "GPU busy ratio, 0–1"),
            gpu_mem_used: gv(&r, "ffrtmp_worker_gpu_memory_used_bytes", "GPU memory used"),
            gpu_mem_total: gv(&r, "ffrtmp_worker_gpu_memory_total_bytes", "GPU memory"),
            gpu_power: gv(&r, "ffrtmp_worker_gpu_power_watts", "GPU power draw"),
            gpu_temp: gv(&r, "ffrtmp_worker_gpu_temperature_celsius", "GPU temperature"),
            gpu_energy: gv(&r, "ffrtmp_worker_gpu_energy_joules", "GPU energy counter since driver load"),
            gpu_sessions: gv(&r, "ffrtmp_worker_gpu_encoder_sessions", "Active NVENC sessions"),
            gpus: reg(
                &r,
                IntGauge::new("ffrtmp_worker_gpus", "GPUs NVML sees on this node (0 without NVIDIA driver or GPU)")
                    .unwrap(),
            ),
            registry: r,
        }
    }

    pub fn set_encoders(&self, available: &[String]) {
        for e in KNOWN_ENCODERS {
            self.encoders.with_label_values(&[e]).set(available.iter().any(|a| a == e) as i64);
        }
    }

    /// Every family this registry can export, including label sets not seen yet.
    pub fn family_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let cs: Vec<&dyn Collector> = vec![
            &self.cpu_usage,
            &self.memory_used,
            &self.memory_total,
            &self.disk_free,
            &self.active_jobs,
            &self.slots,
            &self.jobs_completed,
            &self.jobs_failed,
            &self.jobs_canceled,
            &self.heartbeats,
            &self.encoders,
            &self.gpu_util,
            &self.gpu_mem_used,
            &self.gpu_mem_total,
            &self.gpu_power,
            &self.gpu_temp,
            &self.gpu_energy,
            &self.gpu_sessions,
            &self.gpus,
        ];
        cs.iter().flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone())).collect()
    }

    pub fn set_gpus(&self, gpus: &[GpuInfo]) {
        self.gpus.set(gpus.len() as i64);
        for g in gpus {
            let i = g.index.to_string();
            let l = [i.as_str()];
            self.gpu_mem_total.with_label_values(&l).set(g.memory_total_bytes as f64);
            let set = |v: &GaugeVec, x: Option<f64>| {
                if let Some(x) = x {
                    v.with_label_values(&l).set(x);
                }
            };
            set(&self.gpu_util, g.utilization_percent.map(|u| u / 100.0));
            set(&self.gpu_mem_used, g.memory_used_bytes.map(|b| b as f64));
            set(&self.gpu_power, g.power_watts);
            set(&self.gpu_temp, g.temperature_celsius);
            set(&self.gpu_energy, g.energy_joules_total);
            set(&self.gpu_sessions, g.encoder_sessions.map(|s| s as f64));
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct ReadyInputs {
    pub ffmpeg_ok: bool,
    pub work_dir: PathBuf,
    /// The master URLs (`--master a,b`): ready when any answers.
    pub masters: Vec<String>,
    /// TLS for an https:// master (the worker's roots and `--ca-cert`).
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

async fn ready(inputs: web::Data<ReadyInputs>) -> HttpResponse {
    let disk = nix::sys::statvfs::statvfs(&inputs.work_dir).ok().map(|v| {
        let total = v.blocks() as f64;
        let free = v.blocks_available() as f64;
        if total > 0.0 { 1.0 - free / total } else { 1.0 }
    });
    let disk_ok = disk.is_some_and(|used| used < 0.95);
    // Reachability only: GET /health, never a fake heartbeat.
    let http = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .connector(awc::Connector::new().rustls_0_23(inputs.tls.clone()))
        .finish();
    let mut master_ok = false;
    // Any of the farm's masters (a follower answers /health too and redirects the rest).
    for m in &inputs.masters {
        master_ok = http.get(format!("{m}/health")).send().await.is_ok_and(|r| r.status().is_success());
        if master_ok {
            break;
        }
    }
    let ok = inputs.ffmpeg_ok && disk_ok && master_ok;
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {
            "ffmpeg": if inputs.ffmpeg_ok { "available" } else { "not_found" },
            "disk_space": match disk { Some(u) if u < 0.95 => format!("ok: {:.0}% used", u * 100.0), Some(u) => format!("low: {:.0}% used", u * 100.0), None => "unknown".into() },
            "master": if master_ok { "reachable" } else { "unreachable" },
        },
        "timestamp": chrono::Utc::now().to_rfc3339(),
    });
    if ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// Serve `/metrics`, `/health`, `/ready`; returns the bound address.
pub fn serve(
    metrics: WorkerMetrics,
    inputs: ReadyInputs,
    bind: std::net::SocketAddr,
) -> std::io::Result<(std::net::SocketAddr, actix_web::dev::Server)> {
    let m = web::Data::new(metrics);
    let i = web::Data::new(inputs);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(m.clone())
            .app_data(i.clone())
            .route(
                "/metrics",
                web::get().to(|m: web::Data<WorkerMetrics>| async move {
                    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(m.render())
                }),
            )
            .route(
                "/health",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .json(serde_json::json!({"status": "healthy", "timestamp": chrono::Utc::now().to_rfc3339()}))
                }),
            )
            .route("/ready", web::get().to(ready))
    })
    .workers(1)
    .disable_signals()
    .bind(bind)?;
    let addr = server.addrs()[0];
    Ok((addr, server.run()))
}
