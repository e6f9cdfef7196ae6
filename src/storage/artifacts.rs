//! The master's artifact store: every job's outputs unless a job names another
//! destination. A directory on the master (`--artifact-dir`, the default) or a prefix in
//! an S3-compatible bucket (`--artifact-store s3://bucket/prefix/`, with the master's
//! own AWS_* credentials). Either way an output appears whole or not at all: a file is
//! written under a hidden temporary name, checked, synced and renamed; an object is
//! written by one PUT (or a multipart upload) completed only after the checksum matched.

use super::{Sha256, StoreError, Stored, objects};
use futures_util::{Stream, StreamExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub(super) const PARTIAL_PREFIX: &str = ".partial-";

#[derive(Debug, Clone)]
enum Backend {
    Dir(PathBuf),
    Bucket { name: String, prefix: String },
}

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    backend: Backend,
}

/// How often a receiving file asks the kernel to start writing what it has so far.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// Start writing a file's dirty pages to disk without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk works while the network still
/// delivers, so the `fsync` that makes the file durable has little left to do.
fn start_writeback(f: &tokio::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor this function borrows; it only
    // initiates writeback of the whole file (offset 0, length 0 = to the end).
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl ArtifactStore {
    /// A directory store (created), without the partial files a previous run left.
    pub fn open(root: &Path) -> std::io::Result<ArtifactStore> {
        std::fs::create_dir_all(root)?;
        for job in std::fs::read_dir(root)?.flatten() {
            for attempt in std::fs::read_dir(job.path()).into_iter().flatten().flatten() {
                for f in std::fs::read_dir(attempt.path()).into_iter().flatten().flatten() {
                    if f.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        Ok(ArtifactStore { backend: Backend::Dir(root.to_path_buf()) })
    }

    /// A store under `s3://bucket/prefix/`, reached with this process's AWS_* settings.
    pub fn in_bucket(url: &str) -> Result<ArtifactStore, String> {
        use crate::domain::media::Destination;
        match Destination::parse(url)? {
            Destination::S3 { bucket, prefix } => {
                objects::bucket(&bucket)?;
                Ok(ArtifactStore { backend: Backend::Bucket { name: bucket, prefix } })
            }
            _ => Err(format!("an artifact store is a directory or s3://bucket/prefix/, not '{url}'")),
        }
    }

    /// Where it is, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(root) => root.display().to_string(),
            Backend::Bucket { name, prefix } => format!("s3://{name}/{prefix}"),
        }
    }

    /// Where an attempt's output lives, relative to the store (names are checked by
    /// `domain::media::check_artifact_name` before they get here).
    pub fn location(job_id: &str, attempt: i32, name: &str) -> String {
        format!("{job_id}/a{attempt}/{name}")
    }

    /// The file of a stored output (a directory store), to serve it.
    pub fn local_path(&self, location: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::Dir(root) => Some(root.join(location)),
            Backend::Bucket { .. } => None,
        }
    }

    /// A short-lived download URL of a stored output (a bucket store).
    pub async fn presigned(&self, location: &str) -> Option<Result<String, String>> {
        match &self.backend {
            Backend::Dir(_) => None,
            Backend::Bucket { name, prefix } => {
                Some(objects::presigned_get(name, &format!("{prefix}{location}"), Duration::from_secs(900)).await)
            }
        }
    }

    /// Stream `body` into `location`, hashing as it goes; refuse more than `max_bytes`
    /// and a body whose SHA-256 is not `expected_sha256`.
    pub async fn receive<S, E>(
        &self,
        location: &str,
        body: S,
        max_bytes: u64,
        expected_sha256: Option<&str>,
    ) -> Result<Stored, StoreError>
    where
        S: Stream<Item = Result<actix_web::web::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match &self.backend {
            Backend::Dir(root) => receive_file(&root.join(location), body, max_bytes, expected_sha256).await,
            Backend::Bucket { name, prefix } => {
                receive_object(name, &format!("{prefix}{location}"), body, max_bytes, expected_sha256).await
            }
        }
    }

    /// Remove one stored output (in a directory, its attempt directory once empty).
    pub async fn remove(&self, location: &str) {
        match &self.backend {
            Backend::Dir(root) => {
                let p = root.join(location);
                let _ = std::fs::remove_file(&p);
                let mut dir = p.parent();
                while let Some(d) = dir {
                    if d == root || std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
            Backend::Bucket { name, prefix } => {
                if let Err(e) = objects::delete(name, &format!("{prefix}{location}")).await {
                    log::warn!("could not delete artifact {location}: {e}");
                }
            }
        }
    }
}

/// Stream `body` into `w`, counting, capping at `max_bytes` and hashing; `every_block`
/// runs after each `WRITEBACK_EVERY` bytes. Err if the SHA-256 is not `expected_sha256`
/// (the caller then discards what `w` holds).
async fn copy_checked<S, E, W>(
    body: &mut S,
    w: &mut W,
    max_bytes: u64,
    expected_sha256: Option<&str>,
    mut every_block: impl FnMut(&mut W),
) -> Result<Stored, StoreError>
where
    S: Stream<Item = Result<actix_web::web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut h = Sha256::default();
    let mut n = 0u64;
    let mut next_block = WRITEBACK_EVERY;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
        n += chunk.len() as u64;
        if n > max_bytes {
            return Err(StoreError::TooLarge(max_bytes));
        }
        h.update(&chunk);
        w.write_all(&chunk).await?;
        if n >= next_block {
            next_block = n + WRITEBACK_EVERY;
            every_block(w);
        }
    }
    let got = h.hex();
    // None: the sender knew no checksum (a browser's upload); the one computed here is kept.
    if let Some(want) = expected_sha256
        && !got.eq_ignore_ascii_case(want)
    {
        return Err(StoreError::ChecksumMismatch { got, want: want.to_string() });
    }
    Ok(Stored { bytes: n, sha256: got })
}

async fn receive_file<S, E>(
    dest: &Path,
    mut body: S,
    max_bytes: u64,
    expected_sha256: Option<&str>,
) -> Result<Stored, StoreError>
where
    S: Stream<Item = Result<actix_web::web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let dir = dest.parent().expect("a location has a directory").to_path_buf();
    tokio::fs::create_dir_all(&dir).await?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!("{PARTIAL_PREFIX}{name}-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        // A request body arrives in small chunks; each tokio file write is a trip to
        // the blocking pool, so they are gathered into 1 MiB writes.
        let mut f = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&tmp).await?);
        let stored =
            copy_checked(&mut body, &mut f, max_bytes, expected_sha256, |f| start_writeback(f.get_ref())).await?;
        f.flush().await?;
        f.get_ref().sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, dest).await?;
        // The rename is durable only once the directory is.
        if let Ok(d) = tokio::fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(stored)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn receive_object<S, E>(
    bucket: &str,
    key: &str,
    mut body: S,
    max_bytes: u64,
    expected_sha256: Option<&str>,
) -> Result<Stored, StoreError>
where
    S: Stream<Item = Result<actix_web::web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut w = objects::writer(bucket, key).map_err(|m| StoreError::Io(std::io::Error::other(m)))?;
    let result = copy_checked(&mut body, &mut w, max_bytes, expected_sha256, |_| {}).await;
    match result {
        // The object appears only now, whole.
        Ok(stored) => {
            w.shutdown().await?;
            Ok(stored)
        }
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}
