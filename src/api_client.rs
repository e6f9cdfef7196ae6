//! The one typed HTTP client of the master API, used by the worker and the CLI (awc;
//! it lives on its caller's actix thread because `awc::Client` is not `Send`).

use crate::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// A failed call: transport (retry later), or the master's status and error body.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("master unreachable: {0}")]
    Transport(String),
    #[error("master answered {status}: {code}: {message}")]
    Status { status: u16, code: String, message: String },
    #[error("unexpected answer from master: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

const QUICK_TIMEOUT: Duration = Duration::from_secs(3);

/// Which attempt's output an upload stores.
pub struct UploadTarget<'a> {
    pub job_id: &'a str,
    pub node_id: &'a str,
    pub attempt: i32,
    pub name: &'a str,
}

/// How long a client given several masters keeps trying them (a failover takes a
/// few seconds: the lease lapses at once, the new leader starts its actors).
const FAILOVER_WINDOW: Duration = Duration::from_secs(20);

/// A master URL as the CLI, the worker and `--advertise-url` take it:
/// `http(s)://host[:port][/prefix]`, no credentials, query or fragment.
pub fn check_master_url(u: &str) -> Result<(), String> {
    let parsed: awc::http::Uri = u.parse().map_err(|e| format!("'{u}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none_or(str::is_empty) {
        return Err(format!("'{u}' is not an http:// or https:// URL"));
    }
    if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("'{u}': credentials do not belong in a master URL (use an API key)"));
    }
    if parsed.query().is_some() || u.contains('#') {
        return Err(format!("'{u}': a master URL has no query or fragment"));
    }
    Ok(())
}

/// The masters of a farm, comma-separated (highly available masters on PostgreSQL;
/// one URL for a single master).
pub fn master_urls(list: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> =
        list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(|u| u.trim_end_matches('/').to_string()).collect();
    if urls.is_empty() {
        return Err("no master URL given".into());
    }
    if urls.len() > 16 {
        return Err(format!("{} master URLs given; at most 16", urls.len()));
    }
    urls.iter().try_for_each(|u| check_master_url(u))?;
    Ok(urls)
}

#[derive(Clone)]
pub struct MasterClient {
    /// The masters this client may talk to; it talks to `current`, moves on when that
    /// one is unreachable, and follows a follower's redirect only to one of these (its
    /// key never goes to a URL it was not given).
    bases: Rc<[String]>,
    current: Rc<Cell<usize>>,
    key: Option<String>,
    /// The node token this worker was issued (sent as `X-Node-Token`); shared by every
    /// clone so a rotation reaches all of the worker's loops.
    node_token: std::rc::Rc<std::cell::RefCell<Option<String>>>,
    http: awc::Client,
}

/// TLS for clients of the master: the Mozilla root store plus, when given, a private
/// CA (`--ca-cert`, PEM) for masters whose certificate an in-house CA signed. One
/// config per client, so connections (and their TLS sessions) are reused.
pub fn tls_config(ca_cert: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA certificate {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad CA certificate {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", path.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("bad CA certificate {}: {e}", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl MasterClient {
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self::with_ca(base, key, None).expect("the built-in root store always loads")
    }

    /// A client of the masters in `base` (one URL, or several comma-separated) that
    /// also trusts the CA in `ca_cert` (PEM).
    pub fn with_ca(base: &str, key: Option<String>, ca_cert: Option<&std::path::Path>) -> Result<Self, String> {
        let bases = master_urls(base)?;
        let tls = tls_config(ca_cert)?;
        let connector = awc::Connector::new().rustls_0_23(std::sync::Arc::new(tls));
        // Redirects are not followed: the credentials this client sends must never
        // reach another host (a download's presigned URL is fetched without them).
        let http =
            awc::Client::builder().timeout(Duration::from_secs(90)).disable_redirects().connector(connector).finish();
        Ok(MasterClient { bases: bases.into(), current: Default::default(), key, node_token: Default::default(), http })
    }

    pub fn set_node_token(&self, token: Option<String>) {
        *self.node_token.borrow_mut() = token;
    }

    /// A request to the master with this client's key and node token (`path` from the
    /// API root, e.g. `/jobs/{id}/outputs/{name}`).
    pub fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        self.req(method, path)
    }

    fn req(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let mut r = self.http.request(method, format!("{}{}", self.base(), path));
        if let Some(k) = &self.key {
            r = r.insert_header(("Authorization", format!("Bearer {k}")));
        }
        if let Some(t) = self.node_token.borrow().as_deref() {
            r = r.insert_header(("X-Node-Token", t));
        }
        r
    }

    async fn finish<T: DeserializeOwned>(
        res: Result<
            awc::ClientResponse<
                impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
            >,
            ClientError,
        >,
    ) -> Result<T, ClientError> {
        let mut resp = res?;
        let body = resp.body().limit(16 << 20).await.map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let err: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            return Err(ClientError::Status {
                status,
                code: err.as_ref().map(|e| e.error.clone()).unwrap_or_default(),
                message: err.map(|e| e.message).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::finish(self.exchange(|| self.req(awc::http::Method::GET, path), None).await).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = Self::json_body(body)?;
        Self::finish(self.exchange(|| self.req(awc::http::Method::POST, path), Some(body)).await).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::finish(self.exchange(|| self.req(awc::http::Method::DELETE, path), None).await).await
    }

    /// POST with extra headers (e.g. Idempotency-Key); returns the status too.
    pub async fn post_with<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let build = || {
            let mut r = self.req(awc::http::Method::POST, path);
            for (k, v) in headers {
                r = r.insert_header((*k, v.as_str()));
            }
            r
        };
        Self::finish(self.exchange(build, Some(Self::json_body(body)?)).await).await
    }

    /// POST carrying an `Idempotency-Key` (the master applies it once, whatever the
    /// number of tries), so it may be sent again after an ambiguous failure — the
    /// connection broke after the request left, a leader died mid-answer: with several
    /// masters, for up to [`FAILOVER_WINDOW`].
    pub async fn post_idempotent<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        debug_assert!(headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key")));
        let deadline = std::time::Instant::now() + FAILOVER_WINDOW;
        loop {
            match self.post_with(path, body, headers).await {
                Err(ClientError::Transport(e)) if self.bases.len() > 1 && std::time::Instant::now() < deadline => {
                    log::debug!("{path}: {e}; sending again with the same idempotency key");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                r => return r,
            }
        }
    }

    /// Open the event stream (`GET /events?{query}`), resuming after `last_event_id`.
    pub async fn events(&self, query: &str, last_event_id: Option<&str>) -> Result<EventSource, ClientError> {
        let build = || {
            let mut r = self
                .req(awc::http::Method::GET, &format!("/events?{query}"))
                .insert_header(("accept", "text/event-stream"))
                // The stream lasts as long as it is read: no overall deadline.
                .timeout(Duration::from_secs(24 * 3600));
            if let Some(id) = last_event_id {
                r = r.insert_header(("last-event-id", id));
            }
            r
        };
        let resp = self.exchange(build, None).await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Self::finish::<serde_json::Value>(Ok(resp)).await.and_then(|_| {
                Err(ClientError::Status { status, code: String::new(), message: "not an event stream".into() })
            });
        }
        Ok(EventSource { resp: Box::new(resp), parser: Default::default(), ready: Default::default() })
    }

    /// The master this client talks to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.get() % self.bases.len()]
    }

    /// The master in use did not answer: use the next one.
    fn move_on(&self) {
        self.current.set((self.current.get() + 1) % self.bases.len());
    }

    /// A follower redirected us: use the leader it named if it is one of our masters.
    fn follow_leader(&self, location: &str) -> bool {
        let found = self.bases.iter().position(|b| {
            location.strip_prefix(b.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if let Some(i) = found {
            self.current.set(i);
        }
        found.is_some()
    }

    /// Send a request (built afresh for each try, `body` as JSON), following the
    /// leader: a refused connection moves on to the next master, a follower's `307`
    /// to the leader it names, a `503 no_leader` waits a moment — for up to
    /// [`FAILOVER_WINDOW`] when this client has several masters, once around otherwise.
    /// Only requests that never reached a leader are sent again, so nothing runs twice.
    async fn exchange(
        &self,
        build: impl Fn() -> awc::ClientRequest,
        body: Option<actix_web::web::Bytes>,
    ) -> Result<awc::ClientResponse, ClientError> {
        let deadline = std::time::Instant::now() + FAILOVER_WINDOW;
        let mut tries = 0usize;
        loop {
            tries += 1;
            let r = build();
            let sent = match &body {
                Some(b) => r.insert_header(("Content-Type", "application/json")).send_body(b.clone()).await,
                None => r.send().await,
            };
            let patient = self.bases.len() > 1 && std::time::Instant::now() < deadline;
            let again = tries < self.bases.len() || patient;
            match sent {
                Err(awc::error::SendRequestError::Connect(e)) if again => {
                    log::debug!("master {} unreachable ({e}); trying the next", self.base());
                    self.move_on();
                    if tries >= self.bases.len() {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                Err(e) => {
                    if matches!(e, awc::error::SendRequestError::Connect(_)) {
                        self.move_on();
                    }
                    return Err(ClientError::Transport(e.to_string()));
                }
                Ok(resp) if resp.status().as_u16() == 307 => {
                    let location =
                        resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    if !self.follow_leader(&location) {
                        return Err(ClientError::Status {
                            status: 307,
                            code: "not_leader".into(),
                            message: format!(
                                "{} follows and sends writes to {location}, which is not one of the master URLs given; \
                                 list every master (comma-separated)",
                                self.base()
                            ),
                        });
                    }
                    if !again {
                        return Err(ClientError::Transport("the leader moved; try again".into()));
                    }
                }
                Ok(resp) if resp.status().as_u16() == 503 && resp.headers().contains_key("retry-after") && patient => {
                    // No leader yet (a failover in progress), or one that is shedding load.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(resp) => return Ok(resp),
            }
        }
    }

    fn json_body<B: Serialize>(body: &B) -> Result<actix_web::web::Bytes, ClientError> {
        serde_json::to_vec(body).map(Into::into).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn register(&self, reg: &NodeRegistration) -> Result<RegisteredNode, ClientError> {
        self.post("/nodes/register", reg).await
    }

    pub async fn heartbeat(&self, node_id: &str, hb: &Heartbeat) -> Result<HeartbeatResponse, ClientError> {
        self.post(&format!("/nodes/{node_id}/heartbeat"), hb).await
    }

    pub async fn next_jobs(&self, node_id: &str, wait: f64, max: u32) -> Result<Vec<Job>, ClientError> {
        let r: NextJobResponse = self.get(&format!("/jobs/next?node_id={node_id}&wait={wait}&max={max}")).await?;
        Ok(r.jobs)
    }

    pub async fn control(&self, node_id: &str, wait: f64) -> Result<ControlCommands, ClientError> {
        self.get(&format!("/nodes/{node_id}/control?wait={wait}")).await
    }

    /// POST that must not hold its caller for long (progress, acks): a stuck request
    /// would otherwise stall the reports coalesced behind it.
    async fn post_quick<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let build = || self.req(awc::http::Method::POST, path).timeout(QUICK_TIMEOUT);
        Self::finish(self.exchange(build, Some(Self::json_body(body)?)).await).await
    }

    pub async fn progress(&self, job_id: &str, report: &ProgressReport) -> Result<ProgressResponse, ClientError> {
        self.post_quick(&format!("/jobs/{job_id}/progress"), report).await
    }

    /// Progress on many jobs of `node_id` in one request; an answer per job.
    pub async fn node_progress(&self, node_id: &str, batch: &NodeProgress) -> Result<BatchAnswers, ClientError> {
        self.post_quick(&format!("/nodes/{node_id}/progress"), batch).await
    }

    /// Many results in one request; an answer per result.
    pub async fn results(&self, batch: &ResultBatch) -> Result<BatchAnswers, ClientError> {
        self.post("/results/batch", batch).await
    }

    pub async fn ack(&self, job_id: &str, ack: &ControlAck) -> Result<serde_json::Value, ClientError> {
        self.post_quick(&format!("/jobs/{job_id}/control/ack"), ack).await
    }

    pub async fn release(&self, job_id: &str, r: &LeaseRelease) -> Result<serde_json::Value, ClientError> {
        self.post(&format!("/jobs/{job_id}/release"), r).await
    }

    pub async fn result(&self, r: &JobResult) -> Result<ResultResponse, ClientError> {
        self.post("/results", r).await
    }

    /// Store one output of `attempt`: the file is streamed (never read whole), with its
    /// SHA-256 for the master to verify; `sent` counts the bytes on the way.
    pub async fn upload_output(
        &self,
        target: &UploadTarget<'_>,
        file: &std::path::Path,
        sha256: &str,
        sent: std::rc::Rc<std::cell::Cell<u64>>,
    ) -> Result<JobOutput, ClientError> {
        let f = tokio::fs::File::open(file).await.map_err(|e| ClientError::Transport(e.to_string()))?;
        let body = crate::storage::transfer::file_stream(f, sent);
        let r = self
            .put_output(target, sha256)
            .insert_header(("Content-Type", "application/octet-stream"))
            .timeout(Duration::from_secs(6 * 3600));
        // A stream is sent once: a move to another master is for the caller's retry.
        let sent = match r.send_stream(body).await {
            Err(e) => {
                if matches!(e, awc::error::SendRequestError::Connect(_)) {
                    self.move_on();
                }
                Err(ClientError::Transport(e.to_string()))
            }
            Ok(resp) if resp.status().as_u16() == 307 => {
                let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
                Err(match self.follow_leader(location) {
                    true => ClientError::Transport("the leader moved; send again".into()),
                    false => ClientError::Status {
                        status: 307,
                        code: "not_leader".into(),
                        message: format!("the leader {location} is not one of the master URLs given"),
                    },
                })
            }
            Ok(resp) => Ok(resp),
        };
        Self::finish(sent).await
    }

    /// `PUT /jobs/{id}/outputs/{name}` for `target`, with the SHA-256 the master checks.
    fn put_output(&self, target: &UploadTarget<'_>, sha256: &str) -> awc::ClientRequest {
        let path = format!(
            "/jobs/{}/outputs/{}?node_id={}&attempt={}",
            target.job_id, target.name, target.node_id, target.attempt
        );
        self.req(awc::http::Method::PUT, &path).insert_header((crate::storage::transfer::SHA256_HEADER, sha256))
    }

    /// Record an output this attempt wrote elsewhere (an S3 object, a library file): no
    /// body, only where it is, its size and SHA-256.
    pub async fn record_output(
        &self,
        target: &UploadTarget<'_>,
        location: &str,
        bytes: u64,
        sha256: &str,
    ) -> Result<JobOutput, ClientError> {
        let build = || {
            self.put_output(target, sha256)
                .insert_header((crate::storage::transfer::LOCATION_HEADER, location))
                .insert_header((crate::storage::transfer::BYTES_HEADER, bytes.to_string()))
        };
        Self::finish(self.exchange(build, None).await).await
    }

    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/health").await
    }
}

/// An open event stream: messages as they arrive.
pub struct EventSource {
    resp: Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin>,
    parser: crate::domain::events::SseParser,
    ready: std::collections::VecDeque<crate::domain::events::SseMessage>,
}

impl EventSource {
    /// The next message; None when the stream ended.
    pub async fn next(&mut self) -> Option<Result<crate::domain::events::SseMessage, ClientError>> {
        use futures_util::StreamExt;
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(Ok(m));
            }
            match self.resp.next().await? {
                Ok(bytes) => self.ready.extend(self.parser.feed(&bytes)),
                Err(e) => return Some(Err(ClientError::Transport(e.to_string()))),
            }
        }
    }
}
