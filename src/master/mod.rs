//! `ffrtmp master`: open the database, lead (start the actors, serve the API) or, on
//! PostgreSQL with another master leading, follow until the lease lapses.

mod args;

pub use args::MasterArgs;

use crate::actors::job::JobPolicy;
use crate::actors::leader::LeaderActor;
use crate::actors::{self, ActorConfig, MasterHandles};
use crate::db;
use crate::http::follower::{FollowerState, follower_app, follower_metrics_app};
use crate::http::rate_limit::{RateLimitConfig, RateLimits};
use crate::http::{self, AppState, auth::ApiKeys};
use actix_web::dev::ServerHandle;
use actix_web::{HttpServer, web};
use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

/// A master that is up: the addresses it listens on and what it serves as.
pub struct RunningMaster {
    pub api_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub tls: bool,
    /// Leading (the actors and the full API), or following until it leads (a
    /// follower's servers are replaced by the leader's on the same sockets).
    serving: Rc<RefCell<Serving>>,
    /// The database of a `--db ""` master, removed when the master is dropped.
    _scratch: Option<tempfile::TempDir>,
}

enum Serving {
    Leader { handles: MasterHandles, servers: Vec<ServerHandle> },
    Follower { servers: Vec<ServerHandle> },
}

impl RunningMaster {
    pub fn api_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.api_addr)
    }
    pub fn metrics_url(&self) -> String {
        match self.metrics_addr {
            Some(a) => format!("http://{a}/metrics"),
            None => format!("{}/metrics", self.api_url()),
        }
    }
    /// The actors' handles once this master leads.
    pub fn handles(&self) -> Option<MasterHandles> {
        match &*self.serving.borrow() {
            Serving::Leader { handles, .. } => Some(handles.clone()),
            Serving::Follower { .. } => None,
        }
    }
    /// Answer parked long-polls, finish in-flight requests, stop listening.
    pub async fn stop(&self) {
        use crate::actors::messages::ReleaseWaiters;
        let (handles, servers) = match &*self.serving.borrow() {
            Serving::Leader { handles, servers } => (Some(handles.clone()), servers.clone()),
            Serving::Follower { servers } => (None, servers.clone()),
        };
        if let Some(h) = handles {
            let _ = h.scheduler.send(ReleaseWaiters).await;
            let _ = h.nodes.send(ReleaseWaiters).await;
        }
        for s in servers {
            s.stop(true).await;
        }
    }
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate {}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

/// What either role serves with: settings, the database, the bound sockets.
struct Site {
    args: MasterArgs,
    database: db::DatabaseUrl,
    pool: db::DbPool,
    forget_offline_after: Option<Duration>,
    keys: web::Data<ApiKeys>,
    api: std::net::TcpListener,
    /// The separate `/metrics` listener, if any.
    metrics: Option<std::net::TcpListener>,
    tls: Option<rustls::ServerConfig>,
}

/// An HTTP server for an app factory on (a duplicate of) the site's API socket: the
/// leader's and the follower's servers take turns on the same socket.
macro_rules! serve_api {
    ($site:expr, $app:expr) => {{
        let site: &Site = $site;
        let mut server = HttpServer::new($app)
            // Our own SIGTERM path answers parked long-polls first, then stops gracefully.
            .disable_signals()
            .shutdown_timeout(30)
            .client_request_timeout(Duration::from_secs(30))
            .keep_alive(Duration::from_secs(120));
        if let Some(w) = site.args.http_workers {
            server = server.workers(w.max(1));
        }
        let socket = site.api.try_clone()?;
        let server = match &site.tls {
            Some(tls) => server.listen_rustls_0_23(socket, tls.clone()),
            None => server.listen(socket),
        }
        .map_err(|e| anyhow::anyhow!("cannot serve the API: {e}"))?
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        handle
    }};
}

/// The same on the separate metrics socket, if there is one.
macro_rules! serve_metrics {
    ($site:expr, $app:expr) => {{
        let site: &Site = $site;
        match &site.metrics {
            None => None,
            Some(socket) => {
                let server = HttpServer::new($app)
                    .disable_signals()
                    .workers(1)
                    .listen(socket.try_clone()?)
                    .map_err(|e| anyhow::anyhow!("cannot serve metrics: {e}"))?
                    .run();
                let handle = server.handle();
                actix_rt::spawn(server);
                Some(handle)
            }
        }
    }};
}

impl Site {
    /// The URL followers redirect to while this master leads.
    fn advertised_url(&self) -> String {
        if let Some(u) = &self.args.advertise_url {
            return u.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let port = self.api.local_addr().map(|a| a.port()).unwrap_or(self.args.port);
        let host = if self.args.bind.is_unspecified() {
            gethostname()
        } else {
            match self.args.bind {
                IpAddr::V6(a) => format!("[{a}]"),
                a => a.to_string(),
            }
        };
        format!("{scheme}://{host}:{port}")
    }

    /// Start the actors (rebuilding the farm's state from the database) and serve the
    /// full API: at once for a single master, on election for one of several.
    async fn lead(&self, fence_epoch: Option<i64>) -> anyhow::Result<Serving> {
        let args = &self.args;
        let cfg = ActorConfig {
            heartbeat_interval: Duration::from_secs_f64(args.heartbeat_interval),
            aging_step: Duration::from_secs(args.aging_seconds),
            policy: JobPolicy {
                retry_base: Duration::from_millis(args.retry_backoff_ms),
                unreported_grace: Duration::from_secs_f64(args.unreported_grace.max(0.0)),
                ..JobPolicy::default()
            },
            max_parked_polls: args.max_parked_polls,
            require_node_tokens: args.require_node_tokens,
            webhooks: args.webhooks()?,
            max_event_streams: args.max_event_streams.max(1),
            forget_offline_after: self.forget_offline_after,
            fence_epoch,
        };
        let handles = actors::start(self.pool.clone(), cfg).await?;
        let artifacts = match &args.artifact_store {
            Some(url) => {
                crate::storage::ArtifactStore::in_bucket(url).map_err(|e| anyhow::anyhow!("--artifact-store: {e}"))?
            }
            None => {
                let dir = args.artifact_dir(&self.database);
                crate::storage::ArtifactStore::open(&dir)
                    .map_err(|e| anyhow::anyhow!("cannot open the artifact store {}: {e}", dir.display()))?
            }
        };
        log::info!("artifact store: {}", artifacts.describe());
        let stored = handles.db.read(crate::db::outputs::total_bytes).await?;
        handles.metrics.do_send(crate::actors::messages::MetricRecorded(
            crate::actors::messages::MetricEvent::ArtifactBytesChanged(stored),
        ));
        if args.retention_days > 0 {
            actix_rt::spawn(actors::run_retention(
                handles.clone(),
                artifacts.clone(),
                Duration::from_secs(args.retention_days * 86_400),
                Duration::from_secs(3600),
            ));
        }
        let state = web::Data::new(AppState {
            h: handles.clone(),
            default_max_retries: args.max_retries.clamp(0, 100),
            reject_unplaceable: args.reject_unplaceable,
            strict_parameters: args.strict_parameters,
            max_long_poll: args.max_long_poll.clamp(0.0, 60.0),
            rtmp_allow: args.rtmp_allow()?,
            input_allow: args.input_allow()?,
            artifacts,
            max_output_bytes: args.max_output_bytes,
            s3_allow: args.s3_allow()?,
            output_roots: args.output_roots.clone(),
            webhook_allow: args.webhook_allow()?,
            webhook_secret: args.webhook_secret.clone(),
            sse_keepalive: Duration::from_secs_f64(args.sse_keepalive),
            console_session: Duration::from_secs_f64(args.console_session_hours.clamp(0.01, 24.0 * 30.0) * 3600.0),
            tls: args.tls,
            leader_epoch: fence_epoch,
        });
        let limits = web::Data::new(RateLimits::new(RateLimitConfig {
            per_key: args.rate_limit,
            burst: args.rate_limit_burst,
            per_worker_key: args.worker_rate_limit,
        }));
        let metrics_on_api = args.metrics && args.metrics_port == 0;
        let mut servers = vec![serve_api!(self, {
            let (state, keys, limits) = (state.clone(), self.keys.clone(), limits.clone());
            move || http::build_app(state.clone(), keys.clone(), metrics_on_api).app_data(limits.clone())
        })];
        servers.extend(serve_metrics!(self, move || http::metrics_app(state.clone())));
        Ok(Serving::Leader { handles, servers })
    }

    /// Serve as a follower: reads from the database, the rest redirected to the leader.
    fn follow(&self, leader: actix::Addr<LeaderActor>) -> anyhow::Result<Serving> {
        let state = web::Data::new(FollowerState { leader, pool: self.pool.clone() });
        let metrics_on_api = self.args.metrics && self.args.metrics_port == 0;
        let mut servers = vec![serve_api!(self, {
            let (state, keys) = (state.clone(), self.keys.clone());
            move || follower_app(state.clone(), keys.clone(), metrics_on_api)
        })];
        servers.extend(serve_metrics!(self, move || follower_metrics_app(state.clone())));
        Ok(Serving::Follower { servers })
    }
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How long a starting master on PostgreSQL waits to lead before it serves as a follower.
const FIRST_ELECTION: Duration = Duration::from_secs(2);

/// Start the master inside the current actix System and return once it listens. On
/// PostgreSQL it competes for the leader lease: it leads at once if no other master
/// does, else it follows (serving reads, redirecting the rest) until it wins the lease.
pub async fn start(args: &MasterArgs) -> anyhow::Result<RunningMaster> {
    let args = args.with_secret_files()?;
    let forget_offline_after = crate::domain::node::parse_forget_after(&args.forget_offline_after)
        .map_err(|e| anyhow::anyhow!("--forget-offline-after {e}"))?;
    let keys = args.keys();
    let files = crate::os::raise_open_file_limit();
    log::info!("open-file limit: {files}");
    if !args.bind.is_loopback() && !keys.enabled() && !args.insecure_no_auth {
        anyhow::bail!(
            "refusing to listen on {} without an API key: pass --api-key (or MASTER_API_KEY), or --insecure-no-auth if that is intended",
            args.bind
        );
    }
    if !(0.05..=3600.0).contains(&args.heartbeat_interval) {
        anyhow::bail!("--heartbeat-interval must be between 0.05 and 3600 seconds");
    }
    if !(0.05..=3600.0).contains(&args.sse_keepalive) {
        anyhow::bail!("--sse-keepalive must be between 0.05 and 3600 seconds");
    }
    // Checked here as well as when leading, so a follower refuses bad settings at once.
    args.webhooks()?;
    args.rtmp_allow()?;
    args.input_allow()?;
    args.s3_allow()?;
    if let Some(u) = &args.advertise_url {
        crate::api_client::check_master_url(u).map_err(|e| anyhow::anyhow!("--advertise-url: {e}"))?;
    }
    let tls = if args.tls {
        let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
            anyhow::bail!("--tls needs --cert and --key (PEM files)");
        };
        Some(tls_config(cert, key)?)
    } else {
        None
    };
    let (database, scratch) = args.database()?;
    let pool = db::open(&database, args.sqlite_synchronous, 8)?;
    log::info!("database: {}", database.display());
    let addr = SocketAddr::new(args.bind, args.port);
    let api = std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let metrics = if args.metrics && args.metrics_port != 0 {
        let a = SocketAddr::new(args.bind, args.metrics_port);
        Some(
            std::net::TcpListener::bind(a)
                .map_err(|e| anyhow::anyhow!("cannot listen on metrics port {}: {e}", args.metrics_port))?,
        )
    } else {
        None
    };
    let api_addr = api.local_addr()?;
    let metrics_addr = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
    let is_postgres = database.is_postgres();
    let site = Site {
        args: args.clone(),
        database,
        pool,
        forget_offline_after,
        keys: web::Data::new(keys),
        api,
        metrics,
        tls,
    };
    let mut running = RunningMaster {
        api_addr,
        metrics_addr,
        tls: args.tls,
        serving: Rc::new(RefCell::new(Serving::Follower { servers: Vec::new() })),
        _scratch: scratch,
    };
    if !is_postgres {
        // SQLite: one master, always the leader.
        running.serving = Rc::new(RefCell::new(site.lead(None).await?));
        return Ok(running);
    }
    let me = site.advertised_url();
    let (elected_tx, mut elected) = tokio::sync::oneshot::channel();
    let leader = LeaderActor::start_competing(site.database.clone(), me.clone(), elected_tx);
    // The lease's first try runs as the actor starts: a lone master leads at once, and
    // a restarted one as soon as the database has ended its old session.
    if let Ok(Ok(epoch)) = tokio::time::timeout(FIRST_ELECTION, &mut elected).await {
        running.serving = Rc::new(RefCell::new(site.lead(Some(epoch)).await?));
        return Ok(running);
    }
    log::info!("following: another master holds the leader lease; {me} takes over when it lapses");
    running.serving = Rc::new(RefCell::new(site.follow(leader)?));
    let serving = running.serving.clone();
    actix_rt::spawn(async move {
        let Ok(epoch) = elected.await else { return };
        let started = std::time::Instant::now();
        match site.lead(Some(epoch)).await {
            Ok(leading) => {
                let Serving::Follower { servers } = serving.replace(leading) else { return };
                for s in servers {
                    s.stop(true).await;
                }
                log::info!("leading: actors and API up {:.0?} after the election", started.elapsed());
            }
            Err(e) => crate::actors::leader::deposed(&format!("elected, but the actors did not start: {e}")),
        }
    });
    Ok(running)
}

/// Run the master until SIGINT/SIGTERM.
pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    let running = start(&args).await?;
    let shutdown = crate::os::shutdown_signal();
    let metrics = if args.metrics { running.metrics_url() } else { "off".into() };
    let role = if running.handles().is_some() { "" } else { "; following the leader until it leads" };
    println!("ffrtmp master listening on {} (metrics: {metrics}{role})", running.api_url());
    std::io::stdout().flush().ok();
    crate::os::notify_systemd(true, &format!("listening on {}{role}", running.api_url()));
    shutdown.await;
    crate::os::notify_systemd(false, "finishing in-flight requests");
    log::info!("shutting down: finishing in-flight requests");
    running.stop().await;
    Ok(())
}
