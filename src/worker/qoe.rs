//! Quality of an encode against its source, with ffmpeg's own filters: PSNR and SSIM
//! always, VMAF when this ffmpeg has libvmaf. Nothing is invented: a figure ffmpeg
//! does not print is absent.

use super::probe::Probe;
use crate::domain::argv;
use crate::domain::params::JobSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
    pub vmaf: Option<f64>,
}

impl Scores {
    /// 0–100: VMAF when measured, else SSIM × 100.
    pub fn qoe_score(&self) -> Option<f64> {
        self.vmaf.or(self.ssim.map(|s| (s * 100.0).clamp(0.0, 100.0)))
    }
}

/// `… PSNR y:… average:38.12 min:…` / `… SSIM Y:… All:0.981 (17.2)` / `VMAF score: 95.1`.
pub fn parse_scores(stderr: &str) -> Scores {
    let after = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let v: String =
            rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect();
        v.parse().ok().or_else(|| rest.trim_start().starts_with("inf").then_some(f64::INFINITY))
    };
    let mut s = Scores::default();
    for l in stderr.lines() {
        if l.contains("PSNR") && l.contains("average:") {
            s.psnr = after(l, "average:").map(|v| if v.is_infinite() { 100.0 } else { v });
        }
        if l.contains("SSIM") && l.contains("All:") {
            s.ssim = after(l, "All:");
        }
        if l.contains("VMAF score") {
            s.vmaf = after(l, "VMAF score:").or_else(|| after(l, "VMAF score ="));
        }
    }
    s
}

fn reference_args(spec: &JobSpec, roots: &[PathBuf]) -> Option<Vec<String>> {
    match &spec.input {
        // The same picture the encode was given.
        None => Some(vec!["-f".into(), "lavfi".into(), "-i".into(), argv::synthetic_video(spec)]),
        Some(i) => Some(argv::file_input_args(&argv::resolve_input(i, roots).ok()?)),
    }
}

async fn run(ffmpeg: &str, args: &[String]) -> Option<String> {
    let fut = Command::new(ffmpeg).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(600), fut).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&out.stderr).into_owned())
}

pub async fn measure(ffmpeg: &str, output: &Path, spec: &JobSpec, probe: &Probe, roots: &[PathBuf]) -> Option<Scores> {
    let reference = reference_args(spec, roots)?;
    let mut base: Vec<String> = vec![
        "-hide_banner".into(),
        "-nostdin".into(),
        "-loglevel".into(),
        "info".into(),
        "-i".into(),
        output.to_string_lossy().into_owned(),
    ];
    base.extend(reference);
    // Compare at the output's size. The synthetic reference is generated at that size;
    // a file reference is scaled only when the job resized. (Not scale2ref: under
    // ffmpeg 7 it intermittently ends the graph before the statistics are printed.)
    let reference_chain = match (&spec.input, spec.resolution) {
        (Some(_), Some((w, h))) => format!("[1:v]scale={w}:{h}:flags=bicubic,format=yuv420p"),
        _ => "[1:v]format=yuv420p".to_string(),
    };
    let graph = format!("[0:v]format=yuv420p,split[d1][d2];{reference_chain},split[r1][r2];[d1][r1]psnr;[d2][r2]ssim");
    let mut args = base.clone();
    args.extend(["-lavfi".into(), graph, "-f".into(), "null".into(), "-".into()]);
    let mut scores = parse_scores(&run(ffmpeg, &args).await?);
    if probe.has_libvmaf {
        let mut args = base;
        let graph = format!("[0:v]format=yuv420p[d];{reference_chain}[r];[d][r]libvmaf");
        args.extend(["-lavfi".into(), graph, "-f".into(), "null".into(), "-".into()]);
        if let Some(text) = run(ffmpeg, &args).await {
            scores.vmaf = parse_scores(&text).vmaf;
        }
    }
    Some(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filter_output() {
        let text = "[Parsed_psnr_4 @ 0x5] PSNR y:40.1 u:44.2 v:44.9 average:41.23 min:39.0 max:43.1\n[Parsed_ssim_5 @ 0x6] SSIM Y:0.98 (17.0) U:0.99 V:0.99 All:0.985123 (18.3)\n[libvmaf @ 0x7] VMAF score: 93.456\n";
        let s = parse_scores(text);
        assert_eq!(s, Scores { psnr: Some(41.23), ssim: Some(0.985123), vmaf: Some(93.456) });
        assert_eq!(s.qoe_score(), Some(93.456));
        let s = parse_scores("PSNR y:inf average:inf min:inf");
        assert_eq!(s.psnr, Some(100.0));
        assert_eq!(parse_scores("nothing").qoe_score(), None);
    }
}
