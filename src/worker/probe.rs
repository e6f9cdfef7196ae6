//! Encoder capability is probed, not assumed: every encoder `ffmpeg -encoders` lists
//! that we drive is asked to encode one tiny frame, and only the ones that succeed are
//! reported. (Debian's ffmpeg lists `h264_nvenc` on machines without NVIDIA GPUs, and
//! NVML reports an "encoder capacity" on H100s, which have no NVENC.)

use crate::domain::params::KNOWN_ENCODERS;
use std::time::Duration;
use tokio::process::Command;

/// GStreamer elements each pipeline of `domain::argv::gstreamer_argv` needs. A
/// gst-launch binary alone proves nothing: `rtmpsink` (plugins-bad) and `x264enc`
/// (plugins-ugly) are packaged apart, and a pipeline missing one fails on every retry.
pub const GST_FILE_ELEMENTS: &[&str] = &["videotestsrc", "videoconvert", "x264enc", "mp4mux", "filesink"];
pub const GST_RTMP_ELEMENTS: &[&str] = &["videotestsrc", "videoconvert", "x264enc", "flvmux", "rtmpsink"];

#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub ffmpeg_version: Option<String>,
    /// Set only when the file pipeline's elements are all installed.
    pub gstreamer_version: Option<String>,
    /// The RTMP pipeline's elements are installed too.
    pub gstreamer_rtmp: bool,
    pub encoders: Vec<String>,
    pub has_libvmaf: bool,
}

async fn output(program: &str, args: &[&str]) -> Option<String> {
    let fut = Command::new(program).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(20), fut).await.ok()?.ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Encoder names from `ffmpeg -encoders` output that we know how to drive.
pub fn listed_encoders(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let flags = parts.next()?;
            let name = parts.next()?;
            (flags.starts_with('V') && KNOWN_ENCODERS.contains(&name)).then(|| name.to_string())
        })
        .collect()
}

async fn encodes(ffmpeg: &str, encoder: &str) -> bool {
    // Hardware encoders refuse tiny frames; 256x144 suits all of them.
    let mut args = vec![
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=256x144:rate=10:duration=0.2",
    ];
    if encoder.ends_with("_vaapi") {
        args.extend(["-vaapi_device", "/dev/dri/renderD128", "-vf", "format=nv12,hwupload"]);
    }
    args.extend(["-frames:v", "1", "-c:v", encoder, "-f", "null", "-"]);
    let fut = Command::new(ffmpeg)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(Duration::from_secs(20), fut).await, Ok(Ok(s)) if s.success())
}

/// `gst-inspect-1.0` beside the given `gst-launch-1.0`.
fn inspect_of(gst_launch: &str) -> String {
    match gst_launch.rsplit_once("gst-launch-1.0") {
        Some((dir, "")) => format!("{dir}gst-inspect-1.0"),
        _ => "gst-inspect-1.0".to_string(),
    }
}

async fn has_elements(inspect: &str, elements: &[&str]) -> bool {
    for e in elements {
        if output(inspect, &[e]).await.is_none() {
            log::info!("GStreamer element {e} is not installed");
            return false;
        }
    }
    true
}

pub async fn probe(ffmpeg: &str, gst: &str) -> Probe {
    let ffmpeg_version = output(ffmpeg, &["-hide_banner", "-version"])
        .await
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
    let mut p = Probe { ffmpeg_version, ..Probe::default() };
    let gst_version = output(gst, &["--version"]).await.and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
    if gst_version.is_some() {
        let inspect = inspect_of(gst);
        if has_elements(&inspect, GST_FILE_ELEMENTS).await {
            p.gstreamer_version = gst_version;
            p.gstreamer_rtmp = has_elements(&inspect, GST_RTMP_ELEMENTS).await;
        } else {
            log::warn!("{gst} is installed but its pipeline cannot be built: GStreamer not offered");
        }
    }
    if p.ffmpeg_version.is_none() {
        log::warn!("{ffmpeg} not found or not working: this worker can run no ffmpeg jobs");
        return p;
    }
    let listed = output(ffmpeg, &["-hide_banner", "-encoders"]).await.map(|t| listed_encoders(&t)).unwrap_or_default();
    for enc in listed {
        if encodes(ffmpeg, &enc).await {
            p.encoders.push(enc);
        } else {
            log::info!("encoder {enc} is listed by ffmpeg but failed its probe encode: not offered");
        }
    }
    p.has_libvmaf = output(ffmpeg, &["-hide_banner", "-filters"]).await.is_some_and(|t| t.contains(" libvmaf "));
    p
}

#[cfg(test)]
mod tests {
    #[test]
    fn inspect_is_found_beside_launch() {
        assert_eq!(super::inspect_of("/opt/gst/bin/gst-launch-1.0"), "/opt/gst/bin/gst-inspect-1.0");
        assert_eq!(super::inspect_of("gst-launch-1.0"), "gst-inspect-1.0");
        assert_eq!(super::inspect_of("/nonexistent-gst"), "gst-inspect-1.0");
    }

    #[test]
    fn parses_encoder_list() {
        let text = " V....D libx264              libx264 H.264 / AVC\n V....D h264_nvenc           NVIDIA NVENC H.264 encoder\n A....D aac                  AAC\n V....D libtheora  Theora\n";
        assert_eq!(super::listed_encoders(text), vec!["libx264", "h264_nvenc"]);
    }
}
