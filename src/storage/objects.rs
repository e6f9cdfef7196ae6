//! S3-compatible buckets through `object_store`: objects read into a local file
//! (inputs), files written as objects (outputs), and presigned download URLs.
//!
//! Credentials and the endpoint come from the process's own environment, with the
//! AWS names (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT` for S3-compatible servers, `AWS_ALLOW_HTTP`):
//! workers hold their own, and the master never hands a secret to a job.

use super::transfer::DownloadError;
use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The bucket as this process's environment configures access to it.
pub fn bucket(name: &str) -> Result<AmazonS3, String> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(name);
    // The AWS CLI's spelling of a custom endpoint, too.
    if let Ok(e) = std::env::var("AWS_ENDPOINT_URL")
        && std::env::var_os("AWS_ENDPOINT").is_none()
    {
        b = b.with_endpoint(e);
    }
    b.build().map_err(|e| format!("bucket {name}: {e}"))
}

fn classify(e: object_store::Error) -> DownloadError {
    let permanent = matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    );
    DownloadError { message: e.to_string(), permanent }
}

/// Read `s3://bucket/key` into `dest` (at most `max_bytes`); `got` counts bytes.
pub async fn fetch(
    bucket_name: &str,
    key: &str,
    dest: &Path,
    max_bytes: u64,
    got: Rc<Cell<u64>>,
) -> Result<u64, DownloadError> {
    let store = bucket(bucket_name).map_err(|m| DownloadError { message: m, permanent: true })?;
    let res = store.get(&ObjectPath::from(key)).await.map_err(classify)?;
    let size = res.meta.size as u64;
    if size > max_bytes {
        return Err(DownloadError {
            message: format!("the input is {size} bytes, over the worker's --max-input-bytes {max_bytes}"),
            permanent: true,
        });
    }
    let io = |e: std::io::Error| DownloadError {
        message: format!("cannot write {}: {e}", dest.display()),
        permanent: false,
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut stream = res.into_stream();
    let mut have = 0u64;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .map_err(|_| DownloadError { message: "no data for 30 s".into(), permanent: false })?
    {
        let chunk = chunk.map_err(classify)?;
        have += chunk.len() as u64;
        if have > max_bytes {
            return Err(DownloadError { message: "the input grew past --max-input-bytes".into(), permanent: true });
        }
        file.write_all(&chunk).await.map_err(io)?;
        got.set(have);
    }
    file.flush().await.map_err(io)?;
    Ok(have)
}

/// A streaming writer of `s3://bucket/key`: one PUT for a small object, a multipart
/// upload for a large one; nothing is visible until `shutdown` completes it.
pub fn writer(bucket_name: &str, key: &str) -> Result<object_store::buffered::BufWriter, String> {
    let store: Arc<dyn ObjectStore> = Arc::new(bucket(bucket_name)?);
    Ok(object_store::buffered::BufWriter::new(store, ObjectPath::from(key)))
}

pub async fn delete(bucket_name: &str, key: &str) -> Result<(), String> {
    bucket(bucket_name)?.delete(&ObjectPath::from(key)).await.map_err(|e| e.to_string())
}

/// Write `file` as `s3://bucket/key` (multipart for large files).
pub async fn put(bucket_name: &str, key: &str, file: &Path) -> Result<(), String> {
    let mut f = tokio::fs::File::open(file).await.map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut w = writer(bucket_name, key)?;
    if let Err(e) = tokio::io::copy(&mut f, &mut w).await {
        let _ = w.abort().await;
        return Err(format!("writing s3://{bucket_name}/{key} failed: {e}"));
    }
    w.shutdown().await.map_err(|e| format!("writing s3://{bucket_name}/{key} failed: {e}"))
}

/// A time-limited GET URL for `s3://bucket/key`, signed with this process's credentials.
pub async fn presigned_get(bucket_name: &str, key: &str, ttl: Duration) -> Result<String, String> {
    use object_store::signer::Signer;
    let store = bucket(bucket_name)?;
    store
        .signed_url(http::Method::GET, &ObjectPath::from(key), ttl)
        .await
        .map(|u| u.to_string())
        .map_err(|e| format!("cannot sign a download of s3://{bucket_name}/{key}: {e}"))
}
