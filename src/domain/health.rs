//! The farm's health score: 100 minus penalties, each named with its reason.

use serde::Serialize;

#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    pub database_ok: bool,
    pub nodes_online: usize,
    pub nodes_offline: usize,
    pub nodes_total: usize,
    pub queued: usize,
    pub unplaceable_classes: usize,
    pub oldest_wait_seconds: Option<f64>,
    pub recent_completed: u32,
    pub recent_failed: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Factor {
    pub factor: &'static str,
    pub penalty: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthScore {
    pub score: f64,
    /// healthy (≥ 80), degraded (≥ 50) or critical.
    pub status: &'static str,
    pub factors: Vec<Factor>,
}

/// Longest acceptable wait of the oldest queued job before it counts against health.
pub const STALE_QUEUE_SECONDS: f64 = 600.0;

pub fn score(h: &HealthInputs) -> HealthScore {
    let mut f = Vec::new();
    if !h.database_ok {
        f.push(Factor { factor: "database", penalty: 100.0, detail: "the database cannot be read".into() });
    }
    if h.nodes_online == 0 {
        f.push(Factor {
            factor: "no_workers",
            penalty: 50.0,
            detail: format!("no worker is online ({} registered)", h.nodes_total),
        });
    } else if h.nodes_offline > 0 {
        let frac = h.nodes_offline as f64 / h.nodes_total.max(1) as f64;
        f.push(Factor {
            factor: "offline_nodes",
            penalty: (20.0 * frac).round(),
            detail: format!("{} of {} nodes offline", h.nodes_offline, h.nodes_total),
        });
    }
    let finished = h.recent_completed + h.recent_failed;
    if h.recent_failed > 0 {
        let ratio = h.recent_failed as f64 / finished as f64;
        f.push(Factor {
            factor: "failure_rate",
            penalty: (40.0 * ratio).round(),
            detail: format!("{} of the last {finished} finished jobs failed", h.recent_failed),
        });
    }
    if h.unplaceable_classes > 0 {
        f.push(Factor {
            factor: "unplaceable_jobs",
            penalty: 10.0,
            detail: format!("{} kind(s) of queued job no registered node can run", h.unplaceable_classes),
        });
    }
    if let Some(w) = h.oldest_wait_seconds.filter(|w| *w > STALE_QUEUE_SECONDS) {
        f.push(Factor {
            factor: "queue_wait",
            penalty: 10.0,
            detail: format!("the oldest of {} queued jobs has waited {w:.0}s", h.queued),
        });
    }
    let score = (100.0 - f.iter().map(|x| x.penalty).sum::<f64>()).clamp(0.0, 100.0);
    let status = if score >= 80.0 {
        "healthy"
    } else if score >= 50.0 {
        "degraded"
    } else {
        "critical"
    };
    HealthScore { score, status, factors: f }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_table() {
        let ok = HealthInputs {
            database_ok: true,
            nodes_online: 2,
            nodes_total: 2,
            recent_completed: 10,
            ..Default::default()
        };
        assert_eq!(score(&ok).score, 100.0);
        assert_eq!(score(&ok).status, "healthy");
        let cases: Vec<(HealthInputs, f64, &str)> = vec![
            (HealthInputs { nodes_online: 0, ..ok.clone() }, 50.0, "no_workers"),
            (HealthInputs { nodes_online: 1, nodes_offline: 1, ..ok.clone() }, 90.0, "offline_nodes"),
            (HealthInputs { recent_completed: 5, recent_failed: 5, ..ok.clone() }, 80.0, "failure_rate"),
            (HealthInputs { unplaceable_classes: 1, ..ok.clone() }, 90.0, "unplaceable_jobs"),
            (HealthInputs { queued: 3, oldest_wait_seconds: Some(1200.0), ..ok.clone() }, 90.0, "queue_wait"),
            (HealthInputs { database_ok: false, ..ok.clone() }, 0.0, "database"),
        ];
        for (inputs, want, factor) in cases {
            let s = score(&inputs);
            assert_eq!(s.score, want, "{factor}");
            assert_eq!(s.factors[0].factor, factor);
        }
        // A fresh farm with no finished jobs is fully healthy.
        let fresh = HealthInputs { database_ok: true, nodes_online: 1, nodes_total: 1, ..Default::default() };
        assert_eq!(score(&fresh).score, 100.0);
    }
}
