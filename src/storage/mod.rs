//! Moving media: the master's artifact store ([`ArtifactStore`], the default home of
//! every job's outputs), S3-compatible buckets ([`objects`]) and the transfers a worker
//! makes ([`transfer`]: inputs downloaded, outputs uploaded). Both sides checksum with one [`Sha256`] helper.

mod artifacts;
pub mod objects;
pub mod transfer;

pub use artifacts::ArtifactStore;

use std::path::{Path, PathBuf};

/// A running SHA-256 (hex when finished).
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub fn hex(self) -> String {
        self.0.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// SHA-256 and size of a file, read in 1 MiB chunks.
pub async fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.hex()))
}

/// Copy `src` to `dest` so that `dest` is never seen half-written: a hidden temporary
/// file in the same directory, synced, then renamed into place (a shared library's
/// readers — a media server scanning it — only ever see whole files).
pub async fn place_atomically(src: &Path, dest: &Path) -> std::io::Result<()> {
    let dir = dest.parent().ok_or_else(|| std::io::Error::other("destination has no directory"))?;
    tokio::fs::create_dir_all(dir).await?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!("{}{name}-{}", artifacts::PARTIAL_PREFIX, uuid::Uuid::new_v4().simple()));
    let placed = async {
        tokio::fs::copy(src, &tmp).await?;
        tokio::fs::File::open(&tmp).await?.sync_all().await?;
        tokio::fs::rename(&tmp, dest).await?;
        if let Ok(d) = tokio::fs::File::open(dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
    .await;
    if placed.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    placed
}

/// Is `dir` inside one of `roots`, both as written and once symlinks are resolved (as
/// far as it exists)?
pub fn under_roots(dir: &Path, roots: &[PathBuf]) -> bool {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => return false,
        }
    }
    let Ok(real) = existing.canonicalize() else { return false };
    roots.iter().filter_map(|r| r.canonicalize().ok()).any(|root| {
        let lexical = dir.starts_with(&root) || roots.iter().any(|r| dir.starts_with(r));
        lexical && real.starts_with(&root)
    })
}

/// Why a file was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the upload exceeds the {0}-byte limit")]
    TooLarge(u64),
    #[error("checksum mismatch: the body's SHA-256 is {got}, the request said {want}")]
    ChecksumMismatch { got: String, want: String },
    #[error("the upload ended early: {0}")]
    Body(String),
    #[error("the artifact store cannot write: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored file: its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

/// Every file under `dir` (recursively), as (name relative to `dir` with `/`
/// separators, path), sorted by name. Links and other non-files are skipped.
pub fn files_under(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(d) else { return };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                walk(root, &p, out);
            } else if t.is_file()
                && let Ok(rel) = p.strip_prefix(root)
            {
                let name: Vec<String> =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push((name.join("/"), p));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Bundle every file under `dir` into `dir/<name>` (a tar, paths relative to `dir`),
/// written beside under a temporary name first so it never contains itself.
pub fn tar_package(dir: &Path, name: &str) -> std::io::Result<()> {
    let files = files_under(dir);
    let tmp = dir.with_extension("tar.partial");
    let mut b = tar::Builder::new(std::fs::File::create(&tmp)?);
    for (rel, path) in &files {
        b.append_path_with_name(path, rel)?;
    }
    b.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::web::Bytes;
    use futures_util::Stream;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    fn sha(b: &[u8]) -> String {
        let mut h = Sha256::default();
        h.update(b);
        h.hex()
    }

    #[actix_rt::test]
    async fn files_are_stored_whole_and_verified_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let loc = ArtifactStore::location("j", 1, "out.mp4");
        let stored =
            store.receive(&loc, chunks(&[b"hello ", b"world"]), 100, Some(&sha(b"hello world"))).await.unwrap();
        assert_eq!(stored, Stored { bytes: 11, sha256: sha(b"hello world") });
        assert_eq!(std::fs::read(store.local_path(&loc).unwrap()).unwrap(), b"hello world");
        // A wrong checksum, an oversized body and a broken body store nothing and keep
        // the earlier file intact.
        let e = store.receive(&loc, chunks(&[b"other"]), 100, Some(&sha(b"hello world"))).await.unwrap_err();
        assert!(matches!(e, StoreError::ChecksumMismatch { .. }), "{e}");
        let e = store.receive(&loc, chunks(&[b"12345", b"67890"]), 8, Some(&sha(b"1234567890"))).await.unwrap_err();
        assert!(matches!(e, StoreError::TooLarge(8)), "{e}");
        let broken = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"par")), Err("reset".to_string())]);
        let e = store.receive(&loc, broken, 100, Some(&sha(b"partial"))).await.unwrap_err();
        assert!(matches!(e, StoreError::Body(_)), "{e}");
        assert_eq!(std::fs::read(store.local_path(&loc).unwrap()).unwrap(), b"hello world");
        let leftovers: Vec<_> =
            std::fs::read_dir(store.local_path(&loc).unwrap().parent().unwrap()).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no partial file is left");
        // Partial files of a crashed run are removed when the store opens.
        std::fs::write(store.local_path("j/a1/.partial-out.mp4-x").unwrap(), b"half").unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        assert!(!store.local_path("j/a1/.partial-out.mp4-x").unwrap().exists());
        store.remove(&loc).await;
        assert!(!dir.path().join("j").exists(), "empty directories go with the last file");
    }

    #[actix_rt::test]
    async fn library_files_appear_whole_and_only_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lib");
        std::fs::create_dir_all(&root).unwrap();
        let src = dir.path().join("src.mp4");
        std::fs::write(&src, b"video").unwrap();
        let dest = root.join("tv/show/ep1.mp4");
        place_atomically(&src, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"video");
        assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
        let roots = vec![root.clone()];
        assert!(under_roots(&root.join("tv/new/season"), &roots));
        assert!(!under_roots(&dir.path().join("elsewhere"), &roots));
        // A symlink inside the root that leads out of it does not count as inside.
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
        assert!(!under_roots(&root.join("escape/x"), &roots));
    }
}
