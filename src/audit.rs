//! `ffrtmp audit metrics`: the seed's hand-made metrics audit, automated.
//!
//! It compares the metric families ffrtmp exports (master and worker registries, built
//! in-process) with every family the dashboards' queries and the Prometheus rule files
//! reference. It reports families no dashboard or rule uses, and references to
//! families nobody exports (recording-rule names count as exported by the rules).

use crate::actors::metrics::MetricsActor;
use crate::worker::metrics::WorkerMetrics;
use clap::{Args, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Exported families unused by dashboards/rules, and references to families nobody exports.
    Metrics(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Grafana dashboards (*.json).
    #[arg(long, default_value = "grafana/dashboards")]
    pub dashboards: PathBuf,
    /// Prometheus rule files (*.yml / *.yaml).
    #[arg(long, default_value = "prometheus/rules")]
    pub rules: PathBuf,
}

/// Families the code exports.
pub fn exported_families() -> BTreeSet<String> {
    let mut s: BTreeSet<String> = MetricsActor::new(&[], &[], &[]).family_names().into_iter().collect();
    s.extend(WorkerMetrics::new("audit").family_names());
    s
}

/// `ffrtmp…` identifiers in a PromQL expression or rule text.
pub fn references(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("ffrtmp_") || t.starts_with("ffrtmp:"))
        .map(|t| t.trim_end_matches(':').to_string())
        .collect()
}

/// Map a referenced series name to its family (`_bucket`/`_sum`/`_count` of a histogram).
fn family_of(name: &str, exported: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && exported.contains(base)
        {
            return base.to_string();
        }
    }
    name.to_string()
}

fn files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)))
        .collect();
    v.sort();
    Ok(v)
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                match (k.as_str(), val) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(val, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub unused: Vec<String>,
    /// (file, family)
    pub missing: Vec<(String, String)>,
    pub files_read: usize,
}

pub fn audit(args: &AuditArgs) -> Result<Report, String> {
    let exported = exported_families();
    let mut defined: BTreeSet<String> = BTreeSet::new();
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files_read = 0;
    for f in files(&args.dashboards, &["json"])? {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", f.display()))?;
        let mut exprs = Vec::new();
        collect_exprs(&v, &mut exprs);
        for e in exprs {
            for r in references(&e) {
                refs.entry(family_of(&r, &exported)).or_default().insert(f.display().to_string());
            }
        }
        files_read += 1;
    }
    for f in files(&args.rules, &["yml", "yaml"])? {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for line in text.lines() {
            let t = line.trim_start().trim_start_matches("- ");
            if let Some(name) = t.strip_prefix("record:") {
                defined.insert(name.trim().trim_matches('"').to_string());
                continue;
            }
            for r in references(line) {
                refs.entry(family_of(&r, &exported)).or_default().insert(f.display().to_string());
            }
        }
        files_read += 1;
    }
    let unused = exported.iter().filter(|f| !refs.contains_key(*f)).cloned().collect();
    let missing = refs
        .iter()
        .filter(|(name, _)| !exported.contains(*name) && !defined.contains(*name))
        .flat_map(|(name, fs)| fs.iter().map(move |f| (f.clone(), name.clone())))
        .collect();
    Ok(Report { unused, missing, files_read })
}

/// Print the report; exit code 0 when clean, 1 otherwise.
pub fn run(cmd: AuditCommand) -> i32 {
    let AuditCommand::Metrics(args) = cmd;
    match audit(&args) {
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
        Ok(r) => {
            for u in &r.unused {
                println!("unused: {u} is exported but no dashboard or rule uses it");
            }
            for (f, m) in &r.missing {
                println!("missing: {f} references {m}, which nothing exports");
            }
            let n = exported_families().len();
            if r.unused.is_empty() && r.missing.is_empty() {
                println!("ok: {n} exported families, all used; {} files, no dangling references", r.files_read);
                0
            } else {
                println!("{} unused, {} dangling reference(s)", r.unused.len(), r.missing.len());
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_references() {
        let e = r#"100 * sum(ffrtmp_jobs_total{state="completed"}) / ffrtmp:job_success_ratio:all_time + rate(x[5m]) or ffrtmp_http_request_duration_seconds_bucket"#;
        assert_eq!(
            references(e),
            vec![
                "ffrtmp_jobs_total",
                "ffrtmp:job_success_ratio:all_time",
                "ffrtmp_http_request_duration_seconds_bucket"
            ]
        );
        let exported = exported_families();
        assert_eq!(
            family_of("ffrtmp_http_request_duration_seconds_bucket", &exported),
            "ffrtmp_http_request_duration_seconds"
        );
        assert!(exported.contains("ffrtmp_worker_gpu_temperature_celsius"), "label-less vecs are listed too");
        assert!(exported.contains("ffrtmp_jobs_total"));
    }
}
