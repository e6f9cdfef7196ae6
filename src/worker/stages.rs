//! The steps of a package graph that are more than one encode: the probe (findings to
//! the master, no output), the thumbnails, subtitles and packaging steps' argv (a
//! directory of outputs), and what each writes after ffmpeg: the sprite's WebVTT
//! index, the subtitle renditions of the HLS package, and `package.tar`.

use super::WorkerShared;
use super::delivery::{Outcome, report};
use super::session::{Ending, JobCommand};
use crate::domain::argv::{self, InputSource, OutputTarget};
use crate::domain::ladder::Stage;
use crate::domain::media::InputInfo;
use crate::domain::params::JobSpec;
use crate::domain::state::FailureReason;
use crate::domain::{chunking, packaging};
use crate::wire::*;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc;

fn remove_attempt_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// A probe step: the input is local and probed; its findings go to the master (which
/// plans the ladder from them) and the step completes with no output.
pub async fn run_probe(
    shared: &Rc<WorkerShared>,
    job: &Job,
    path: Option<PathBuf>,
    mut info: Option<crate::domain::media::InputInfo>,
    dir: &Path,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
) -> Ending {
    let wants_keyframes =
        crate::domain::params::parse_job_spec(&job.parameters, job.engine).is_ok_and(|s| s.probe_keyframes);
    if let (true, Some(path), Some(info)) = (wants_keyframes, path, info.as_mut()) {
        // A chunked job cuts its source on these; without them every cut is exact-time.
        match keyframes(&shared.cfg.ffprobe, &path).await {
            Ok(k) => info.keyframes = Some(k),
            Err(e) => log::warn!("job {}: no keyframe times ({e}); chunks will be cut at exact times", job.id),
        }
    }
    let probed = ProgressReport {
        node_id: shared.node_id.clone(),
        attempt: Some(job.attempt),
        detail: ProgressDetail { percent: 100.0, phase: Some("probed".into()), ..Default::default() },
        input_info: info,
        log_lines: Vec::new(),
    };
    let mut delay = Duration::from_millis(200);
    let ending = loop {
        match shared.client.progress(&job.id, &probed).await {
            Ok(_) => break Ending::Completed,
            Err(e) if e.status() == Some(409) => break Ending::Discarded,
            Err(e) if delay > Duration::from_secs(20) => {
                break Ending::failed(format!("cannot report the probe: {e}"), FailureReason::NetworkError, true);
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    };
    if ending == Ending::Discarded {
        remove_attempt_dir(dir);
        return ending;
    }
    report(shared, job, &ending, Outcome::default(), Some(dir), Some(commands)).await;
    ending
}

/// The first video stream's keyframe times, read from packet flags (nothing decoded).
async fn keyframes(ffprobe: &str, path: &Path) -> Result<Vec<f64>, String> {
    let args = ["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"];
    let out = super::input::run_ffprobe(ffprobe, &args, path, Duration::from_secs(600)).await?;
    Ok(chunking::parse_keyframes(&String::from_utf8_lossy(&out)))
}

/// What a joining step reads, as one input: a stitch's length is its chunks' together
/// (its progress and ETA run over the whole); a package's is its first rendition's.
pub fn joined_info(stage: Stage, inputs: &[super::input::LocalInput]) -> Option<InputInfo> {
    let mut info = inputs.first()?.info.clone();
    if matches!(stage, Stage::Stitch | Stage::RenditionStitch) {
        let chunks = inputs.iter().filter(|i| label(&i.path) != "audio");
        info.duration_seconds = Some(chunks.filter_map(|i| i.info.duration_seconds).sum());
    }
    Some(info)
}

/// The label of a step's input file (`360p.mp4` → `360p`).
fn label(f: &Path) -> String {
    f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

type StepArgv = Result<(String, Vec<String>, OutputTarget), Ending>;

/// The program, argv and output directory of a thumbnails, subtitles or packaging
/// step (None: an ordinary encode).
pub fn argv(
    spec: &JobSpec,
    input: &InputSource,
    extra_inputs: &[PathBuf],
    info: Option<&InputInfo>,
    dir: &Path,
    ffmpeg: &str,
) -> Option<StepArgv> {
    let user = |e: &str| Ending::failed(e.to_string(), FailureReason::UserError, false);
    let make_dir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|e| Ending::Failed {
            error: format!("cannot create {}: {e}", d.display()),
            reason: FailureReason::ResourceError,
            retryable: true,
        })
    };
    let out = dir.join("out");
    let mut a = argv::common_prefix();
    let step = || -> Result<Vec<String>, Ending> {
        match (spec.stage, input) {
            (Some(Stage::Package), _) => {
                let p = spec.packaging.clone().ok_or_else(|| user("a packaging step needs 'packaging'"))?;
                let media: Vec<&PathBuf> = extra_inputs.iter().filter(|f| !label(f).starts_with("subs_")).collect();
                let (audio, video): (Vec<&PathBuf>, Vec<&PathBuf>) =
                    media.into_iter().partition(|f| label(f).starts_with("audio_"));
                let video: Vec<(String, &Path)> = video.iter().map(|f| (label(f), f.as_path())).collect();
                let audio: Vec<(String, &Path)> = audio.iter().map(|f| (label(f), f.as_path())).collect();
                make_dir(&out.join("dash"))?;
                Ok(packaging::package_args(p.format, p.segment_seconds, &video, &audio, p.audio_tracks, &out))
            }
            (Some(Stage::Thumbnails), InputSource::File(source)) => {
                let t = spec.thumbnails.clone().ok_or_else(|| user("a thumbnails step needs 'thumbnails'"))?;
                make_dir(&out.join("thumbnails"))?;
                let duration = info.and_then(|i| i.duration_seconds).unwrap_or(t.every_seconds);
                Ok(packaging::thumbnail_args(&t, duration, source, &out))
            }
            (Some(Stage::Subtitles), InputSource::File(source)) => {
                make_dir(&out)?;
                Ok(packaging::subtitle_args(&spec.subtitle_tracks, source, &out))
            }
            (Some(Stage::Stitch | Stage::RenditionStitch), _) => {
                // The chunks in the order planned; the audio (encoded once) muxed in.
                let (audio, chunks): (Vec<&PathBuf>, Vec<&PathBuf>) =
                    extra_inputs.iter().partition(|f| label(f) == "audio");
                if chunks.is_empty() {
                    return Err(user("a stitch step needs its chunks as inputs"));
                }
                let names: Vec<String> = chunks
                    .iter()
                    .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
                    .collect();
                let list = dir.join("concat.txt");
                std::fs::write(&list, chunking::concat_list(&names)).map_err(|e| Ending::Failed {
                    error: format!("cannot write {}: {e}", list.display()),
                    reason: FailureReason::ResourceError,
                    retryable: true,
                })?;
                make_dir(&out)?;
                let name = spec.output.clone().unwrap_or_else(|| "output.mp4".into());
                Ok(chunking::stitch_args(&list.to_string_lossy(), audio.first().map(|p| p.as_path()), &out.join(name)))
            }
            _ => Err(user("")),
        }
    };
    match spec.stage {
        Some(Stage::Package | Stage::Thumbnails | Stage::Subtitles | Stage::Stitch | Stage::RenditionStitch) => {
            Some(step().map(|args| {
                a.extend(args);
                (ffmpeg.to_string(), a, OutputTarget::Dir(out))
            }))
        }
        _ => None,
    }
}

/// What a step writes once its ffmpeg succeeded, into its output directory `out`.
pub async fn finish(
    spec: &JobSpec,
    info: Option<&InputInfo>,
    inputs: &[super::input::LocalInput],
    out: &Path,
    dir: &Path,
) -> Result<(), String> {
    if let Some(t) = spec.thumbnails.as_ref().filter(|t| t.sprite) {
        // The sprite's index: which tile shows which stretch of the source.
        let (w, h) = info
            .and_then(|i| i.streams.iter().find(|s| s.kind == "video"))
            .and_then(|v| Some((v.width?, v.height?)))
            .unwrap_or((16, 9));
        let tile =
            (t.width, ((f64::from(t.width) * f64::from(h) / f64::from(w.max(1)) / 2.0).round() as u32 * 2).max(2));
        let duration = info.and_then(|i| i.duration_seconds).unwrap_or(t.every_seconds);
        std::fs::write(out.join("thumbnails/sprite.vtt"), packaging::sprite_vtt(duration, t.every_seconds, tile))
            .map_err(|e| format!("cannot write the sprite index: {e}"))?;
    }
    if spec.stage == Some(Stage::Package) {
        if let Some(p) = spec.packaging.as_ref().filter(|p| p.format.hls()) {
            let duration = info.and_then(|i| i.duration_seconds).unwrap_or(0.0);
            complete_master(p, duration, inputs, out, dir).map_err(|e| format!("cannot finish the playlist: {e}"))?;
        }
        let d = out.to_path_buf();
        actix_rt::task::spawn_blocking(move || crate::storage::tar_package(&d, "package.tar"))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot write package.tar: {e}"))?;
    }
    Ok(())
}

/// What ffmpeg leaves out of the multivariant playlist: each variant's `CODECS`
/// (from the probed renditions) and each subtitle track as an HLS rendition
/// (`hls/subs_<k>/index.m3u8` + `subs.vtt`).
fn complete_master(
    p: &crate::domain::params::Packaging,
    duration: f64,
    inputs: &[super::input::LocalInput],
    out: &Path,
    dir: &Path,
) -> std::io::Result<()> {
    let codecs: std::collections::HashMap<String, String> = inputs
        .iter()
        .filter_map(|i| {
            let video = i.info.streams.iter().find(|s| s.kind == "video")?;
            Some((label(&i.path), packaging::codec_string(video)?))
        })
        .collect();
    let tracks = &p.subtitles;
    for t in tracks {
        let to = out.join("hls").join(&t.name);
        std::fs::create_dir_all(&to)?;
        std::fs::copy(dir.join(format!("{}.vtt", t.name)), to.join("subs.vtt"))?;
        std::fs::write(to.join("index.m3u8"), packaging::subtitle_playlist(duration))?;
    }
    let master = out.join("hls/master.m3u8");
    let text = std::fs::read_to_string(&master)?;
    let text = packaging::add_codecs(&text, &codecs);
    std::fs::write(&master, packaging::add_subtitles_to_master(&text, tracks))
}
