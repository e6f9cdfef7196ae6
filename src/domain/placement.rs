//! Placement: which nodes can run which jobs.
//!
//! A job's [`Requirements`] are derived from its validated parameters; a node's
//! [`NodeCaps`] from what its worker probed and reported. Encoder presence is taken
//! only from the worker's probe (an encode that really succeeded), never from NVML's
//! "encoder capacity" or a `has_gpu` flag: an H100 reports capacity and has no NVENC.

use super::params::{Engine, JobSpec, OutputMode, is_gpu_encoder};

/// What a job needs from a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Requirements {
    /// Any one of these encoders will do; empty = no encoder constraint.
    pub encoders: Vec<&'static str>,
    pub needs_gpu: bool,
    pub gpu_index: Option<u32>,
    pub min_gpu_memory_mb: u64,
    pub min_cpu_threads: u32,
    pub min_ram_mb: u64,
    pub needs_gstreamer: bool,
    /// GStreamer streaming to RTMP (`rtmpsink`).
    pub needs_gstreamer_rtmp: bool,
}

impl Requirements {
    pub fn from_spec(spec: &JobSpec) -> Self {
        Requirements {
            encoders: spec.encoders.to_vec(),
            needs_gpu: spec.needs_gpu(),
            gpu_index: spec.gpu_index,
            min_gpu_memory_mb: spec.gpu_memory_mb.unwrap_or(0),
            min_cpu_threads: spec.threads.unwrap_or(0),
            min_ram_mb: spec.max_memory_mb.unwrap_or(0),
            needs_gstreamer: spec.engine == Engine::Gstreamer,
            needs_gstreamer_rtmp: spec.engine == Engine::Gstreamer && spec.output_mode == OutputMode::Rtmp,
        }
    }

    /// A short human reason naming what no node offers.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.encoders.is_empty() {
            parts.push(format!("encoder {}", self.encoders.join(" or ")));
        }
        if self.needs_gpu {
            parts.push("a GPU".into());
        }
        if let Some(i) = self.gpu_index {
            parts.push(format!("GPU index {i}"));
        }
        if self.min_gpu_memory_mb > 0 {
            parts.push(format!("{} MiB of GPU memory", self.min_gpu_memory_mb));
        }
        if self.min_cpu_threads > 0 {
            parts.push(format!("{} CPU threads", self.min_cpu_threads));
        }
        if self.min_ram_mb > 0 {
            parts.push(format!("{} MiB of RAM", self.min_ram_mb));
        }
        if self.needs_gstreamer_rtmp {
            parts.push("GStreamer with rtmpsink".into());
        } else if self.needs_gstreamer {
            parts.push("GStreamer".into());
        }
        parts.join(", ")
    }
}

/// A GPU as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GpuCaps {
    pub index: u32,
    pub memory_total_mb: u64,
}

/// What a node can do, from its registration and heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NodeCaps {
    pub cpu_threads: u32,
    pub ram_total_mb: u64,
    /// Latest free RAM from a heartbeat; None when the worker never said.
    pub ram_free_mb: Option<u64>,
    pub gpus: Vec<GpuCaps>,
    pub has_gpu: bool,
    /// Encoders whose probe encode succeeded. None: a seed-style worker that does not
    /// probe; it gets CPU encoders, and GPU encoders only when its `gpu_capabilities`
    /// name them.
    pub encoders: Option<Vec<String>>,
    pub gpu_capabilities: Vec<String>,
    pub has_gstreamer: bool,
    pub has_gstreamer_rtmp: bool,
    pub max_concurrent_jobs: u32,
}

/// A GPU capability in ffmpeg's encoder spelling: seed agents write `nvenc_h264`,
/// `nvenc_h265`, `nvenc_av1` (some versions `h264_nvenc`); both name `h264_nvenc` etc.
pub fn capability_as_encoder(capability: &str) -> String {
    let c = capability.trim().to_ascii_lowercase();
    const HARDWARE: [&str; 4] = ["nvenc", "qsv", "vaapi", "videotoolbox"];
    match c.split_once('_') {
        Some((hw, codec)) if HARDWARE.contains(&hw) => {
            let codec = match codec {
                "h265" | "hevc" => "hevc",
                other => other,
            };
            format!("{codec}_{hw}")
        }
        Some(("h265", hw)) if HARDWARE.contains(&hw) => format!("hevc_{hw}"),
        _ => c,
    }
}

impl NodeCaps {
    fn has_encoder(&self, enc: &str) -> bool {
        match &self.encoders {
            Some(list) => list.iter().any(|e| e == enc),
            // A seed agent probes nothing. Its GPU capabilities, when it names any, are
            // taken at their word; the real agent names none, and then the seed's own
            // rule applies: hardware encoders go to nodes that have a GPU.
            None if is_gpu_encoder(enc) => {
                self.has_gpu && (self.gpu_capabilities.is_empty() || self.gpu_capabilities.iter().any(|c| c == enc))
            }
            None => true,
        }
    }

    fn gpu_count(&self) -> usize {
        if self.gpus.is_empty() && self.has_gpu { 1 } else { self.gpus.len() }
    }

    /// Could this node ever run the job (hardware only, ignoring load)?
    pub fn can_ever_run(&self, req: &Requirements) -> bool {
        if !req.encoders.is_empty() && !req.encoders.iter().any(|e| self.has_encoder(e)) {
            return false;
        }
        if req.needs_gpu && self.gpu_count() == 0 {
            return false;
        }
        if let Some(i) = req.gpu_index
            && i as usize >= self.gpu_count()
        {
            return false;
        }
        if req.min_gpu_memory_mb > 0 {
            let fits = |g: &GpuCaps| g.memory_total_mb >= req.min_gpu_memory_mb;
            let ok = match req.gpu_index {
                Some(i) => self.gpus.iter().any(|g| g.index == i && fits(g)),
                None => self.gpus.iter().any(fits),
            };
            if !ok {
                return false;
            }
        }
        if req.min_cpu_threads > self.cpu_threads && self.cpu_threads > 0 {
            return false;
        }
        if req.min_ram_mb > 0 && self.ram_total_mb > 0 && req.min_ram_mb > self.ram_total_mb {
            return false;
        }
        if (req.needs_gstreamer && !self.has_gstreamer) || (req.needs_gstreamer_rtmp && !self.has_gstreamer_rtmp) {
            return false;
        }
        true
    }

    /// Can it run the job now, given its free RAM?
    pub fn can_run_now(&self, req: &Requirements) -> bool {
        self.can_ever_run(req)
            && match (req.min_ram_mb, self.ram_free_mb) {
                (0, _) | (_, None) => true,
                (need, Some(free)) => free >= need,
            }
    }
}

/// Order candidate nodes `(node, free_slots, load_score, arrival)` for one placement
/// round: most free slots first, then least loaded, then the earliest arrival (stable).
/// Nodes without a free slot are left out. O(n log n), once per round.
pub fn rank_nodes<T>(mut candidates: Vec<(T, u32, f64, u64)>) -> Vec<(T, u32)> {
    candidates.retain(|c| c.1 > 0);
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.total_cmp(&b.2)).then(a.3.cmp(&b.3)));
    candidates.into_iter().map(|(t, free, _, _)| (t, free)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::params::parse_job_spec;
    use serde_json::json;

    fn req(p: serde_json::Value) -> Requirements {
        Requirements::from_spec(&parse_job_spec(p.as_object().unwrap(), crate::domain::params::Engine::Auto).unwrap())
    }

    fn cpu_node() -> NodeCaps {
        NodeCaps {
            cpu_threads: 8,
            ram_total_mb: 16_000,
            encoders: Some(vec!["libx264".into(), "libvpx-vp9".into()]),
            max_concurrent_jobs: 2,
            ..Default::default()
        }
    }

    fn h100() -> NodeCaps {
        // NVML says "encoder capacity 100", the probe found no working NVENC.
        NodeCaps {
            has_gpu: true,
            gpus: vec![GpuCaps { index: 0, memory_total_mb: 81_000 }],
            gpu_capabilities: vec!["h264_nvenc".into()],
            ..cpu_node()
        }
    }

    fn l4() -> NodeCaps {
        let mut n = h100();
        n.encoders.as_mut().unwrap().push("h264_nvenc".into());
        n.gpus[0].memory_total_mb = 24_000;
        n
    }

    #[test]
    fn placement_table() {
        let seed_gpu = NodeCaps {
            has_gpu: true,
            gpu_capabilities: vec!["h264_nvenc".into()],
            encoders: None,
            ..Default::default()
        };
        let seed_cpu = NodeCaps { encoders: None, ..Default::default() };
        let seed_gpu_no_caps = NodeCaps { has_gpu: true, encoders: None, ..Default::default() };
        let cases: Vec<(serde_json::Value, NodeCaps, bool)> = vec![
            (json!({"codec":"h264"}), cpu_node(), true),
            (json!({"codec":"h265"}), cpu_node(), false),
            (json!({"codec":"h264_nvenc"}), cpu_node(), false),
            (json!({"codec":"h264_nvenc"}), h100(), false),
            (json!({"codec":"h264_nvenc"}), l4(), true),
            (json!({"codec":"h264_nvenc"}), seed_gpu.clone(), true),
            (json!({"codec":"hevc_nvenc"}), seed_gpu, false),
            (json!({"codec":"h264_nvenc"}), seed_cpu.clone(), false),
            (json!({"codec":"h265"}), seed_cpu, true),
            // The real seed agent sends has_gpu and no capabilities: the seed's rule.
            (json!({"codec":"hevc_nvenc"}), seed_gpu_no_caps.clone(), true),
            (json!({"codec":"h264_videotoolbox"}), seed_gpu_no_caps.clone(), true),
            (json!({"codec":"h264"}), seed_gpu_no_caps, true),
            (json!({"codec":"h264_videotoolbox"}), l4(), false),
            (json!({"hwaccel":"cuda"}), cpu_node(), false),
            (json!({"hwaccel":"cuda"}), h100(), true),
            (json!({"threads":16}), cpu_node(), false),
            (json!({"threads":8}), cpu_node(), true),
            (json!({"gpu":1}), h100(), false),
            (json!({"gpu_memory_mb":40000}), l4(), false),
            (json!({"gpu_memory_mb":40000}), h100(), true),
            (json!({"resource_limits":{"max_memory_mb":32000}}), cpu_node(), false),
            (json!({"engine":"gstreamer"}), cpu_node(), false),
        ];
        for (params, node, expect) in cases {
            assert_eq!(node.can_ever_run(&req(params.clone())), expect, "{params} on {node:?}");
        }
    }

    #[test]
    fn seed_capability_spellings() {
        for (seed, ours) in [
            ("nvenc_h264", "h264_nvenc"),
            ("nvenc_h265", "hevc_nvenc"),
            ("nvenc_hevc", "hevc_nvenc"),
            ("nvenc_av1", "av1_nvenc"),
            ("h264_nvenc", "h264_nvenc"),
            ("h265_nvenc", "hevc_nvenc"),
            ("qsv_h264", "h264_qsv"),
            ("VAAPI_H264", "h264_vaapi"),
            ("videotoolbox_h264", "h264_videotoolbox"),
            ("cuda", "cuda"),
        ] {
            assert_eq!(capability_as_encoder(seed), ours, "{seed}");
        }
    }

    #[test]
    fn free_ram_gates_now_not_ever() {
        let mut n = cpu_node();
        n.ram_free_mb = Some(1000);
        let r = req(json!({"resource_limits":{"max_memory_mb":2000}}));
        assert!(n.can_ever_run(&r));
        assert!(!n.can_run_now(&r));
    }

    #[test]
    fn node_choice_prefers_free_slots_then_low_load() {
        let order =
            rank_nodes(vec![("a", 1, 0.1, 0), ("b", 2, 0.9, 1), ("c", 2, 0.5, 2), ("d", 0, 0.0, 3), ("e", 2, 0.5, 0)]);
        let names: Vec<&str> = order.iter().map(|o| o.0).collect();
        assert_eq!(names, ["e", "c", "b", "a"], "free slots, then load, then arrival; full nodes left out");
    }
}
