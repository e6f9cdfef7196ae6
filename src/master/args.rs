//! `ffrtmp master`'s settings: every flag (with its environment fallback), the secrets
//! read from files, and the checks that turn them into what the master runs with.

use crate::db::{self, Synchronous};
use crate::http::auth::{ApiKeys, Role};
use clap::Args;
use std::net::IpAddr;
use std::path::PathBuf;
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

    pub(super) fn keys(&self) -> ApiKeys {
        let fallback = std::env::var("FFMPEG_RTMP_API_KEY").ok().filter(|k| !k.is_empty());
        let mut keys: Vec<(String, Role)> = Vec::new();
        let admins: Vec<String> =
            if self.api_keys.is_empty() { fallback.into_iter().collect() } else { self.api_keys.clone() };
        keys.extend(admins.into_iter().filter(|k| !k.is_empty()).map(|k| (k, Role::Admin)));
        keys.extend(self.worker_keys.iter().filter(|k| !k.is_empty()).map(|k| (k.clone(), Role::Worker)));
        keys.extend(self.read_keys.iter().filter(|k| !k.is_empty()).map(|k| (k.clone(), Role::ReadOnly)));
        ApiKeys::new(keys)
    }

    pub(super) fn rtmp_allow(&self) -> anyhow::Result<Option<Vec<crate::domain::allow::HostPattern>>> {
        if self.rtmp_allow.is_empty() {
            return Ok(None);
        }
        let p =
            self.rtmp_allow.iter().map(|s| crate::domain::allow::HostPattern::parse(s)).collect::<Result<Vec<_>, _>>();
        p.map(Some).map_err(|e| anyhow::anyhow!("--rtmp-allow: {e}"))
    }

    pub(super) fn input_allow(&self) -> anyhow::Result<Vec<crate::domain::allow::HostPattern>> {
        self.input_allow
            .iter()
            .map(|s| crate::domain::allow::HostPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--input-allow: {e}"))
    }

    pub(super) fn webhook_allow(&self) -> anyhow::Result<Vec<crate::domain::allow::HostPattern>> {
        self.webhook_allow
            .iter()
            .map(|s| crate::domain::allow::HostPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--webhook-allow: {e}"))
    }

    pub(super) fn webhooks(&self) -> anyhow::Result<crate::actors::webhooks::WebhookConfig> {
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

    pub(super) fn s3_allow(&self) -> anyhow::Result<Vec<String>> {
        for b in &self.s3_allow {
            crate::domain::media::check_bucket(b).map_err(|e| anyhow::anyhow!("--s3-allow: {e}"))?;
        }
        Ok(self.s3_allow.clone())
    }

    /// The artifact store's directory: given, else beside the database file.
    pub(super) fn artifact_dir(&self, database: &db::DatabaseUrl) -> PathBuf {
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
    pub(super) fn database(&self) -> anyhow::Result<(db::DatabaseUrl, Option<tempfile::TempDir>)> {
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
