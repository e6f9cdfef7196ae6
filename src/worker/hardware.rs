//! What the machine is: CPU, RAM, disk from sysinfo; GPUs from NVML (loaded at run
//! time: no NVIDIA library or no GPU simply means no GPUs).

use crate::wire::GpuInfo;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub cpu_model: String,
    pub cpu_threads: u32,
    pub cpu_load_percent: f64,
    pub ram_total_bytes: u64,
    pub ram_free_bytes: u64,
    pub disk_free_bytes: Option<u64>,
}

pub struct Hardware {
    sys: Option<sysinfo::System>,
    nvml: Option<nvml_wrapper::Nvml>,
}

impl Hardware {
    pub fn new() -> Self {
        let sys = sysinfo::System::new().ok();
        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                log::info!("no NVML ({e}); reporting no GPUs");
                None
            }
        };
        Hardware { sys, nvml }
    }

    pub fn snapshot(&mut self, work_dir: &Path) -> Snapshot {
        let mut s = Snapshot::default();
        if let Some(sys) = &mut self.sys {
            sys.refresh_cpu_all();
            sys.refresh_memory();
            s.cpu_threads = sys.cpus().len() as u32;
            s.cpu_model = sys.cpus().first().map(|c| c.brand().trim().to_string()).unwrap_or_default();
            s.cpu_load_percent = sys.global_cpu_usage() as f64;
            s.ram_total_bytes = sys.total_memory();
            s.ram_free_bytes = sys.available_memory();
        }
        if s.cpu_threads == 0 {
            s.cpu_threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        }
        s.disk_free_bytes = nix::sys::statvfs::statvfs(work_dir).ok().map(|v| v.blocks_available() * v.fragment_size());
        s
    }

    /// Every GPU NVML sees, with whatever figures it can read (absent ones omitted).
    pub fn gpus(&self) -> Vec<GpuInfo> {
        let Some(nvml) = &self.nvml else { return Vec::new() };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok();
                Some(GpuInfo {
                    index: i,
                    name: d.name().unwrap_or_default(),
                    memory_total_bytes: mem.as_ref().map(|m| m.total).unwrap_or(0),
                    memory_used_bytes: mem.map(|m| m.used),
                    utilization_percent: d.utilization_rates().ok().map(|u| u.gpu as f64),
                    temperature_celsius: d
                        .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                        .ok()
                        .map(|t| t as f64),
                    power_watts: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                    energy_joules_total: d.total_energy_consumption().ok().map(|mj| mj as f64 / 1000.0),
                    encoder_sessions: d.encoder_stats().ok().map(|s| s.session_count),
                })
            })
            .collect()
    }

    /// The NVML energy counter of one GPU, in joules.
    pub fn gpu_energy_joules(&self, index: u32) -> Option<f64> {
        let d = self.nvml.as_ref()?.device_by_index(index).ok()?;
        d.total_energy_consumption().ok().map(|mj| mj as f64 / 1000.0)
    }
}

impl Default for Hardware {
    fn default() -> Self {
        Self::new()
    }
}

/// CPU package energy from RAPL (`/sys/class/powercap/intel-rapl:*`), in joules, when
/// readable; None otherwise (never invented).
pub fn rapl_energy_joules() -> Option<(f64, f64)> {
    let dir = Path::new("/sys/class/powercap");
    let mut total = 0.0;
    let mut range = 0.0;
    let mut found = false;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // Package domains only (intel-rapl:0, :1 …), not their sub-zones.
        if !name.starts_with("intel-rapl:") || name.matches(':').count() != 1 {
            continue;
        }
        let uj: f64 = std::fs::read_to_string(e.path().join("energy_uj")).ok()?.trim().parse().ok()?;
        let max: f64 = std::fs::read_to_string(e.path().join("max_energy_range_uj"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        total += uj / 1e6;
        range += max / 1e6;
        found = true;
    }
    found.then_some((total, range))
}
