//! Transfers over HTTP, streamed both ways: a file as a request body (uploads), and a
//! response body into a file with a size cap, a stall timeout and resumed retries
//! (`Range`), classified into what retrying can fix and what it cannot.

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The header an upload names its body's SHA-256 in (hex).
pub const SHA256_HEADER: &str = "x-content-sha256";
/// An output stored elsewhere (`s3://bucket/key`): recorded, not uploaded.
pub const LOCATION_HEADER: &str = "x-output-location";
/// The size of an output recorded by location.
pub const BYTES_HEADER: &str = "x-output-bytes";

const CHUNK: usize = 256 * 1024;

/// A file as a stream of chunks; `sent` counts what was read.
pub fn file_stream(
    file: tokio::fs::File,
    sent: Rc<Cell<u64>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin + 'static {
    Box::pin(futures_util::stream::unfold((file, sent), |(mut f, sent)| async move {
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                sent.set(sent.get() + n as u64);
                Some((Ok(Bytes::from(buf)), (f, sent)))
            }
            Err(e) => Some((Err(e), (f, sent))),
        }
    }))
}

/// Why a download failed, and whether another try could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DownloadError {
    pub message: String,
    /// Retrying cannot help (404, 403, too large): the input is wrong, not the network.
    pub permanent: bool,
}

impl DownloadError {
    fn permanent(m: impl Into<String>) -> Self {
        DownloadError { message: m.into(), permanent: true }
    }
    fn transient(m: impl Into<String>) -> Self {
        DownloadError { message: m.into(), permanent: false }
    }
}

/// How a download behaves.
#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    pub max_bytes: u64,
    /// Longest wait for the next chunk (or the response head).
    pub stall: Duration,
    /// Tries in all; each after the first resumes where the last one stopped.
    pub tries: u32,
    /// Follow one redirect (the master's presigned URL of an object), with a client
    /// that sends no credentials. Off for URL inputs: a redirect could lead past the
    /// master's allow-list.
    pub follow_redirect: bool,
}

/// Download into `dest`. `request(offset)` builds the request; from a non-zero offset
/// it asks for the rest (`Range`) and a server that answers 200 instead is read from
/// the start again. `got` counts bytes in the file.
pub async fn download(
    request: impl Fn(u64) -> awc::ClientRequest,
    dest: &Path,
    limits: DownloadLimits,
    got: Rc<Cell<u64>>,
) -> Result<u64, DownloadError> {
    let io = |e: std::io::Error| DownloadError::transient(format!("cannot write {}: {e}", dest.display()));
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut have = 0u64;
    let mut delay = Duration::from_millis(200);
    let mut last = DownloadError::transient("no try made");
    let mut redirected: Option<(awc::Client, String)> = None;
    for try_no in 0..limits.tries.max(1) {
        if try_no > 0 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        let req = match &redirected {
            Some((plain, url)) => plain.get(url.as_str()),
            None => request(have),
        };
        let mut req = req.timeout(limits.stall);
        if have > 0 {
            req = req.insert_header(("Range", format!("bytes={have}-")));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = DownloadError::transient(format!("request failed: {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        match status {
            200 => {
                if have > 0 {
                    // No resumption offered: start over.
                    file.set_len(0).await.map_err(io)?;
                    file = tokio::fs::OpenOptions::new().write(true).open(dest).await.map_err(io)?;
                    have = 0;
                }
            }
            206 if have > 0 => {}
            301 | 302 | 303 | 307 | 308 if limits.follow_redirect && redirected.is_none() => {
                let to = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
                let Some(to) = to else { return Err(DownloadError::permanent("a redirect without a location")) };
                redirected = Some((awc::Client::builder().disable_redirects().finish(), to));
                last = DownloadError::transient("redirected");
                delay = Duration::ZERO;
                continue;
            }
            301 | 302 | 303 | 307 | 308 => {
                return Err(DownloadError::permanent(format!("HTTP {status}: redirects are not followed")));
            }
            404 | 410 => return Err(DownloadError::permanent(format!("the input is not there (HTTP {status})"))),
            s if (400..500).contains(&s) && s != 408 && s != 429 => {
                return Err(DownloadError::permanent(format!("the input server refused it (HTTP {s})")));
            }
            s => {
                last = DownloadError::transient(format!("the input server answered HTTP {s}"));
                continue;
            }
        }
        let declared = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|len| have + len);
        if let Some(total) = declared
            && total > limits.max_bytes
        {
            return Err(DownloadError::permanent(format!(
                "the input is {total} bytes, over the worker's --max-input-bytes {}",
                limits.max_bytes
            )));
        }
        let ended = loop {
            let next = match tokio::time::timeout(limits.stall, resp.next()).await {
                Ok(n) => n,
                Err(_) => break Err(DownloadError::transient(format!("no data for {:?}", limits.stall))),
            };
            match next {
                None => break Ok(()),
                Some(Err(e)) => break Err(DownloadError::transient(format!("the transfer broke: {e}"))),
                Some(Ok(chunk)) => {
                    if have + chunk.len() as u64 > limits.max_bytes {
                        return Err(DownloadError::permanent(format!(
                            "the input is over the worker's --max-input-bytes {}",
                            limits.max_bytes
                        )));
                    }
                    file.write_all(&chunk).await.map_err(io)?;
                    have += chunk.len() as u64;
                    got.set(have);
                }
            }
        };
        // A connection closed early can look like a clean end: the length says.
        let ended = match (ended, declared) {
            (Ok(()), Some(total)) if have < total => {
                Err(DownloadError::transient(format!("the transfer broke after {have} of {total} bytes")))
            }
            (other, _) => other,
        };
        match ended {
            Ok(()) => {
                file.flush().await.map_err(io)?;
                return Ok(have);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
