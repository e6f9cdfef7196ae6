//! ffrtmp: a distributed FFmpeg/RTMP transcoding farm.
//!
//! One binary with three roles: `master` (actors + REST API + database), `worker`
//! (runs ffmpeg on a transcoding machine) and client commands (`jobs …`, `nodes …`).
//! Layers: `http` → `actors` → pure `domain` logic + `db`. `domain` imports neither
//! actix nor diesel; `worker` shares only `domain` and `wire` with the master.

pub mod actors;
pub mod api_client;
pub mod audit;
pub mod bench;
pub mod client;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod master;
pub mod os;
pub mod storage;
pub mod testkit;
pub mod up;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod layer_rules {
    //! The layering above, checked on the source: a test fails the moment a file
    //! imports across a boundary it must not cross.

    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Lines of the files under `paths` that mention any of `forbidden`.
    fn offences(paths: &[&str], forbidden: &[&str]) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for p in paths {
            let path = root.join(p);
            if path.is_dir() {
                rust_files(&path, &mut files);
            } else {
                files.push(path);
            }
        }
        let mut out = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if let Some(bad) = forbidden.iter().find(|b| code.contains(*b)) {
                    out.push(format!("{}:{}: uses {bad}", f.display(), i + 1));
                }
            }
        }
        out
    }

    #[test]
    fn worker_and_cli_use_only_domain_wire_and_the_api_client() {
        let found = offences(
            &["worker", "client", "api_client.rs"],
            &["crate::actors", "crate::db", "crate::http", "crate::master", "crate::bench"],
        );
        assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
    }

    #[test]
    fn storage_is_shared_by_master_and_worker_and_owns_no_actor() {
        let found = offences(
            &["storage"],
            &[
                "crate::actors",
                "crate::db",
                "crate::http",
                "crate::master",
                "crate::worker",
                "crate::client",
                "actix::",
            ],
        );
        assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
    }

    #[test]
    fn domain_is_pure() {
        let found = offences(
            &["domain"],
            &[
                "actix",
                "diesel",
                "crate::actors",
                "crate::db",
                "crate::http",
                "crate::worker",
                "crate::client",
                "tokio::",
            ],
        );
        assert!(found.is_empty(), "domain must stay free of actix, diesel and IO layers:\n{}", found.join("\n"));
    }

    #[test]
    fn the_job_session_does_no_io() {
        // The worker's per-attempt state machine decides; the executor does the IO.
        let found = offences(
            &["worker/session.rs"],
            &["tokio", "actix", "std::fs", "std::process", "api_client", "super::executor", "super::delivery"],
        );
        assert!(found.is_empty(), "worker/session.rs must stay free of IO:\n{}", found.join("\n"));
    }
}
