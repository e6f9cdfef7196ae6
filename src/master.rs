//! `ffrtmp master`: open the database, start the actors, serve the API.

use crate::actors::job::JobPolicy;
use crate::actors::leader::LeaderActor;
use crate::actors::{self, ActorConfig, MasterHandles};
use crate::db::{self, Synchronous};
use crate::http::follower::{FollowerState, follower_app, follower_metrics_app};
use crate::http::rate_limit::{RateLimitConfig, RateLimits};
use crate::http::{
    self, AppState,
    auth::{ApiKeys, Role},
};
use actix_web::dev::ServerHandle;
use actix_web::{HttpServer, web};
use clap::Args;
use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct MasterArgs {
    /// Address to listen on. A non-loopback address needs an API key (or --insecure-no-auth).
    #[arg(long, env = "FFRTMP_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// API port (0 = any free port; the chosen one is printed).
    #[arg(long, env = "FFRTMP_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Port of the separate /metrics listener; 0 serves /metrics on the API port instead.
    #[arg(long, env = "FFRTMP_METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Serve Prometheus metrics at all (`--metrics=false`, as the seed's master took it:
    /// no metrics listener and no /metrics route).
    #[arg(long, env = "FFRTMP_METRICS", num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub metrics: bool,
    /// SQLite database file (the embedded default). `--db ""` (the seed's in-memory
    /// store): a temporary database, deleted when the master exits.
    #[arg(long, env = "FFRTMP_DB", default_value = "ffrtmp.db", value_parser = path_or_empty)]
    pub db: PathBuf,
    /// Database URL: postgres://USER:PASS@HOST:PORT/DB for PostgreSQL, or sqlite://PATH.
    /// Wins over --db.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// SQLite durability: full fsyncs the WAL at every (group) commit; normal survives a master crash only.
    #[arg(long, env = "FFRTMP_SQLITE_SYNCHRONOUS", value_enum, default_value = "full")]
    pub sqlite_synchronous: Synchronous,
    /// Admin API key (also MASTER_API_KEY or FFMPEG_RTMP_API_KEY). Repeat for several.
    #[arg(long = "api-key", env = "MASTER_API_KEY")]
    pub api_keys: Vec<String>,
    /// API key with the worker role (register, heartbeat, next, progress, results).
    #[arg(long = "worker-api-key", env = "FFRTMP_WORKER_API_KEY")]
    pub worker_keys: Vec<String>,
    /// API key with the read-only role (GET routes).
    #[arg(long = "read-api-key", env = "FFRTMP_READ_API_KEY")]
    pub read_keys: Vec<String>,
    /// Files of admin API keys, one per line (keys that never show in `ps` or the
    /// environment: systemd credentials, Kubernetes or compose secrets). Repeatable.
    #[arg(long = "api-key-file", env = "FFRTMP_MASTER_API_KEY_FILE", value_delimiter = ',')]
    pub api_key_files: Vec<PathBuf>,
    /// Files of worker-role API keys, one per line.
    #[arg(long = "worker-api-key-file", env = "FFRTMP_WORKER_API_KEY_FILE", value_delimiter = ',')]
    pub worker_key_files: Vec<PathBuf>,
    /// Files of read-only API keys, one per line.
    #[arg(long = "read-api-key-file", env = "FFRTMP_READ_API_KEY_FILE", value_delimiter = ',')]
    pub read_key_files: Vec<PathBuf>,
    /// File holding the database URL (its password stays out of `ps` and the environment).
    #[arg(long, env = "FFRTMP_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
    /// File holding --webhook-secret.
    #[arg(long, env = "FFRTMP_WEBHOOK_SECRET_FILE", conflicts_with = "webhook_secret")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Allow binding a non-loopback address with no API key.
    #[arg(long, env = "FFRTMP_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve HTTPS (rustls) with --cert and --key.
    #[arg(long, env = "FFRTMP_TLS", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub tls: bool,
    #[arg(long, env = "FFRTMP_CERT")]
    pub cert: Option<PathBuf>,
    #[arg(long, env = "FFRTMP_KEY")]
    pub key: Option<PathBuf>,
    /// Automatic retries per job when the job does not say.
    #[arg(long, env = "FFRTMP_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: i32,
    /// First retry backoff in milliseconds (doubles each retry, ±25 % jitter, capped at 5 min).
    #[arg(long, env = "FFRTMP_RETRY_BACKOFF_MS", default_value_t = 2000)]
    pub retry_backoff_ms: u64,
    /// Seconds between worker heartbeats; 3 missed = node lost.
    #[arg(long, env = "FFRTMP_HEARTBEAT_INTERVAL", default_value_t = 5.0)]
    pub heartbeat_interval: f64,
    /// Seconds of waiting that raise a queued job one level (0 = no aging).
    #[arg(long, env = "FFRTMP_AGING_SECONDS", default_value_t = 120)]
    pub aging_seconds: u64,
    /// Reject at submission a job that no registered node could ever run (else it stays queued with a reason).
    #[arg(long, env = "FFRTMP_REJECT_UNPLACEABLE")]
    pub reject_unplaceable: bool,
    /// Refuse (400) job parameters no encode reads, instead of keeping them on the job
    /// and listing them as `ignored_parameters` in the reply (the seed kept them).
    #[arg(long, env = "FFRTMP_STRICT_PARAMETERS")]
    pub strict_parameters: bool,
    /// Delete finished jobs older than this many days (0 = keep forever).
    #[arg(long, env = "FFRTMP_RETENTION_DAYS", default_value_t = 7)]
    pub retention_days: u64,
    /// Seconds a job may go unlisted in its worker's heartbeats after placement before its lease is revoked.
    #[arg(long, env = "FFRTMP_UNREPORTED_GRACE", default_value_t = 10.0)]
    pub unreported_grace: f64,
    /// Longest long-poll a worker may hold (`wait=` of /jobs/next and /nodes/{id}/control is capped to it).
    #[arg(long, env = "FFRTMP_MAX_LONG_POLL", default_value_t = 60.0)]
    pub max_long_poll: f64,
    /// Parked `/jobs/next` long-polls held at once (one per node); beyond it a poll gets 503.
    #[arg(long, env = "FFRTMP_MAX_PARKED_POLLS", default_value_t = crate::actors::scheduler::DEFAULT_MAX_PARKED_POLLS)]
    pub max_parked_polls: usize,
    /// Hosts RTMP jobs may stream to: `host`, `host:port`, `*.domain` or `*` (repeatable).
    /// Default: the hosts of the registered workers' `--rtmp-base`.
    #[arg(long = "rtmp-allow", env = "FFRTMP_RTMP_ALLOW", value_delimiter = ',')]
    pub rtmp_allow: Vec<String>,
    /// Hosts URL inputs (`http(s)://`) may come from: `host`, `host:port`, `*.domain` or
    /// `*` (repeatable). Default: none. A host that is or resolves to a loopback,
    /// private or link-local address must be named exactly (never through a wildcard).
    #[arg(long = "input-allow", env = "FFRTMP_INPUT_ALLOW", value_delimiter = ',')]
    pub input_allow: Vec<String>,
    /// Directory of the artifact store (every job's outputs). Default: `artifacts/`
    /// beside the `--db` file (also with PostgreSQL).
    #[arg(long, env = "FFRTMP_ARTIFACT_DIR")]
    pub artifact_dir: Option<PathBuf>,
    /// S3 buckets jobs may read (`s3://` inputs) and write (`destination`) (repeatable).
    /// Workers use their own AWS_* credentials; the master's own sign download URLs.
    #[arg(long = "s3-allow", env = "FFRTMP_S3_ALLOW", value_delimiter = ',')]
    pub s3_allow: Vec<String>,
    /// A shared library the workers write `file://` destinations into, mounted here too
    /// (repeatable): its outputs are then downloadable through the API.
    #[arg(long = "output-root", env = "FFRTMP_OUTPUT_ROOTS", value_delimiter = ',')]
    pub output_roots: Vec<PathBuf>,
    /// Keep the artifact store in a bucket instead of `--artifact-dir`:
    /// `s3://bucket/prefix/`, with this process's AWS_* credentials (downloads are
    /// redirected to presigned URLs).
    #[arg(long, env = "FFRTMP_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,
    /// Largest single output a worker may store, in bytes.
    #[arg(long, env = "FFRTMP_MAX_OUTPUT_BYTES", default_value_t = 64 << 30)]
    pub max_output_bytes: u64,
    /// Requests per second each admin or read-only API key may make (0 = unlimited).
    #[arg(long, env = "FFRTMP_RATE_LIMIT", default_value_t = 500)]
    pub rate_limit: u32,
    /// Burst above --rate-limit a key may spend at once.
    #[arg(long, env = "FFRTMP_RATE_LIMIT_BURST", default_value_t = 1000)]
    pub rate_limit_burst: u32,
    /// Requests per second per worker API key (0 = unlimited; long-polls are never limited).
    #[arg(long, env = "FFRTMP_WORKER_RATE_LIMIT", default_value_t = 0)]
    pub worker_rate_limit: u32,
    /// Refuse nodes that do not use a node token (seed-style agents on the shared worker key).
    #[arg(long, env = "FFRTMP_REQUIRE_NODE_TOKENS")]
    pub require_node_tokens: bool,
    /// Hosts webhooks may be delivered to: `host`, `host:port`, `*.domain` or `*`
    /// (repeatable). Default: none. A loopback, private or link-local receiver must be
    /// named exactly (never through a wildcard).
    #[arg(long = "webhook-allow", env = "FFRTMP_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<String>,
    /// Secret that signs the `notify` webhooks of jobs that bring none.
    #[arg(long, env = "FFRTMP_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// First retry of a failed webhook delivery waits about this long (ms); each further
    /// retry doubles it, up to an hour, with ±25 % jitter.
    #[arg(long, env = "FFRTMP_WEBHOOK_RETRY_BASE_MS", default_value_t = 5000)]
    pub webhook_retry_base_ms: u64,
    /// A delivery still failing this long after its event is given up (`failed`), hours.
    #[arg(long, env = "FFRTMP_WEBHOOK_RETRY_WINDOW_HOURS", default_value_t = 24.0)]
    pub webhook_retry_window_hours: f64,
    /// Undelivered events one webhook may hold; beyond it the oldest are dropped (counted).
    #[arg(long, env = "FFRTMP_WEBHOOK_BACKLOG", default_value_t = 100_000)]
    pub webhook_backlog: usize,
    /// Deliveries in flight at once per webhook (one per job at a time, in order).
    #[arg(long, env = "FFRTMP_WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub webhook_concurrency: usize,
    /// Days the outbox keeps events (resumable streams, redeliveries). Undelivered
    /// webhook events are kept until they settle.
    #[arg(long, env = "FFRTMP_EVENT_RETENTION_DAYS", default_value_t = 7.0)]
    pub event_retention_days: f64,
    /// Event streams (`GET /events`) open at once.
    #[arg(long, env = "FFRTMP_MAX_EVENT_STREAMS", default_value_t = crate::actors::events::DEFAULT_MAX_SUBSCRIBERS)]
    pub max_event_streams: usize,
    /// Seconds between keep-alive comments on an idle event stream.
    #[arg(long, env = "FFRTMP_SSE_KEEPALIVE", default_value_t = 15.0)]
    pub sse_keepalive: f64,
    /// Hours a web console session lasts after signing in (it can be signed out, or
    /// every session revoked with `DELETE /sessions`, sooner).
    #[arg(long, env = "FFRTMP_CONSOLE_SESSION_HOURS", default_value_t = 12.0)]
    pub console_session_hours: f64,
    /// Offline nodes silent this long are removed (`24h`, `90m`, `30s`, `7d`; `0` keeps
    /// them): workers scaled away do not pile up as dead nodes.
    #[arg(long, env = "FFRTMP_FORGET_OFFLINE_AFTER", default_value = "24h")]
    pub forget_offline_after: String,
    /// The URL clients are redirected to while this master leads the farm (several
    /// masters on one PostgreSQL database). Default: http(s)://<bind address>:<port>
    /// (the host name when bound to every address).
    #[arg(long, env = "FFRTMP_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// HTTP worker threads (default: number of CPUs).
    #[arg(long, env = "FFRTMP_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
}

impl MasterArgs {
    /// These settings with every `--…-file` read in (keys added to the ones given
    /// directly; the database URL and webhook secret taken from their files).
    pub fn with_secret_files(&self) -> anyhow::Result<MasterArgs> {
        use crate::os::{read_secret, read_secrets};
        let mut a = self.clone();
        for (flag, files, keys) in [
            ("--api-key-file", &self.api_key_files, &mut a.api_keys),
            ("--worker-api-key-file", &self.worker_key_files, &mut a.worker_keys),
            ("--read-api-key-file", &self.read_key_files, &mut a.read_keys),
        ] {
            for f in files {
                keys.extend(read_secrets(flag, f)?);
            }
        }
        if let Some(f) = &self.database_url_file {
            a.database_url = Some(read_secret("--database-url-file", f)?);
        }
        if let Some(f) = &self.webhook_secret_file {
            a.webhook_secret = Some(read_secret("--webhook-secret-file", f)?);
        }
        Ok(a)
    }

    fn keys(&self) -> ApiKeys {
        let fallback = std::env::var("FFMPEG_RTMP_API_KEY").ok().filter(|k| !k.is_empty());
        let mut keys: Vec<(String, Role)> = Vec::new();
        let admins: Vec<String> =
            if self.api_keys.is_empty() { fallback.into_iter().collect() } else { self.api_keys.clone() };
        keys.extend(admins.into_iter().filter(|k| !k.is_empty()).map(|k| (k, Role::Admin)));
        keys.extend(self.worker_keys.iter().filter(|k| !k.is_empty()).map(|k| (k.clone(), Role::Worker)));
        keys.extend(self.read_keys.iter().filter(|k| !k.is_empty()).map(|k| (k.clone(), Role::ReadOnly)));
        ApiKeys::new(keys)
    }

    fn rtmp_allow(&self) -> anyhow::Result<Option<Vec<crate::domain::allow::HostPattern>>> {
        if self.rtmp_allow.is_empty() {
            return Ok(None);
        }
        let p =
            self.rtmp_allow.iter().map(|s| crate::domain::allow::HostPattern::parse(s)).collect::<Result<Vec<_>, _>>();
        p.map(Some).map_err(|e| anyhow::anyhow!("--rtmp-allow: {e}"))
    }

    fn input_allow(&self) -> anyhow::Result<Vec<crate::domain::allow::HostPattern>> {
        self.input_allow
            .iter()
            .map(|s| crate::domain::allow::HostPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--input-allow: {e}"))
    }

    fn webhook_allow(&self) -> anyhow::Result<Vec<crate::domain::allow::HostPattern>> {
        self.webhook_allow
            .iter()
            .map(|s| crate::domain::allow::HostPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--webhook-allow: {e}"))
    }

    fn webhooks(&self) -> anyhow::Result<crate::actors::webhooks::WebhookConfig> {
        if !(0.0..=24.0 * 365.0).contains(&self.webhook_retry_window_hours) {
            anyhow::bail!("--webhook-retry-window-hours must be between 0 and 8760");
        }
        if !(0.0..=36_500.0).contains(&self.event_retention_days) {
            anyhow::bail!("--event-retention-days must be between 0 and 36500");
        }
        if let Some(s) = &self.webhook_secret
            && s.len() < 16
        {
            anyhow::bail!("--webhook-secret must be at least 16 characters");
        }
        Ok(crate::actors::webhooks::WebhookConfig {
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.clamp(10, 3_600_000)),
            retry_window: Duration::from_secs_f64(self.webhook_retry_window_hours * 3600.0),
            max_backlog: self.webhook_backlog.max(1),
            concurrency: self.webhook_concurrency.clamp(1, 1024),
            timeout: Duration::from_secs(10),
            allow: self.webhook_allow()?,
            retention: Duration::from_secs_f64(self.event_retention_days * 86_400.0),
        })
    }

    fn s3_allow(&self) -> anyhow::Result<Vec<String>> {
        for b in &self.s3_allow {
            crate::domain::media::check_bucket(b).map_err(|e| anyhow::anyhow!("--s3-allow: {e}"))?;
        }
        Ok(self.s3_allow.clone())
    }

    /// The artifact store's directory: given, else beside the database file.
    fn artifact_dir(&self, database: &db::DatabaseUrl) -> PathBuf {
        if let Some(d) = &self.artifact_dir {
            return d.clone();
        }
        // Beside the SQLite file (the scratch one of `--db ""` included); with
        // PostgreSQL beside where `--db` would be.
        let file = match database {
            db::DatabaseUrl::Sqlite(p) => p.as_path(),
            _ => self.db.as_path(),
        };
        file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).join("artifacts")
    }

    /// Where the data lives, and the scratch directory of a `--db ""` store (deleted
    /// with it).
    fn database(&self) -> anyhow::Result<(db::DatabaseUrl, Option<tempfile::TempDir>)> {
        match &self.database_url {
            None if self.db.as_os_str().is_empty() => {
                let scratch = tempfile::Builder::new().prefix("ffrtmp-memory-").tempdir()?;
                log::warn!(
                    "--db \"\": an in-memory store (a temporary database in {}); every job and node is lost when the master exits",
                    scratch.path().display()
                );
                Ok((db::DatabaseUrl::Sqlite(scratch.path().join("ffrtmp.db")), Some(scratch)))
            }
            None => Ok((db::DatabaseUrl::Sqlite(self.db.clone()), None)),
            Some(u) => Ok((db::DatabaseUrl::parse(u).map_err(|e| anyhow::anyhow!("--database-url: {e}"))?, None)),
        }
    }
}

/// A path that may be empty (clap's own path parser refuses `--db ""`).
fn path_or_empty(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

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
