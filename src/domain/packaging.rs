//! The files of a streaming package, pure: the argv of the packaging, thumbnail and
//! subtitle steps, the subtitle renditions' playlists added to ffmpeg's multivariant
//! playlist, and the sprite sheet's WebVTT index. `domain::ladder` plans the steps;
//! `worker::stages` runs them.

use super::ladder::{PackageFormat, Thumbnails};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The packaging step's ffmpeg arguments (after `-hide_banner …`): stream copy of the
/// renditions (`video` local files, highest first, each named by its label) and audio
/// files (`audio`, each holding `audio_tracks` tracks) into `out/hls/` and/or
/// `out/dash/`. Segments fall on the renditions' aligned keyframes.
pub fn package_args(
    format: PackageFormat,
    segment_seconds: f64,
    video: &[(String, &Path)],
    audio: &[(String, &Path)],
    audio_tracks: usize,
    out: &Path,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    for (_, p) in video.iter().chain(audio) {
        a.extend(super::argv::file_input_args(p));
    }
    let maps = |a: &mut Vec<String>| {
        for i in 0..video.len() {
            a.extend(["-map".into(), format!("{i}:v:0")]);
        }
        for j in 0..audio.len() {
            for t in 0..audio_tracks {
                a.extend(["-map".into(), format!("{}:a:{t}", video.len() + j)]);
            }
        }
        a.extend(["-c".into(), "copy".into()]);
    };
    let seg = format!("{segment_seconds}");
    if format.hls() {
        maps(&mut a);
        let mut vsm: Vec<String> = video
            .iter()
            .enumerate()
            .map(
                |(i, (l, _))| {
                    if audio.is_empty() { format!("v:{i},name:{l}") } else { format!("v:{i},agroup:aud,name:{l}") }
                },
            )
            .collect();
        let mut k = 0;
        for (l, _) in audio {
            for t in 0..audio_tracks {
                let name = if audio_tracks > 1 { format!("{l}_{t}") } else { l.clone() };
                let default = if k == 0 { ",default:yes" } else { "" };
                vsm.push(format!("a:{k},agroup:aud,name:{name}{default}"));
                k += 1;
            }
        }
        let hls = out.join("hls");
        a.extend(
            [
                "-f",
                "hls",
                "-hls_time",
                &seg,
                "-hls_playlist_type",
                "vod",
                "-hls_segment_type",
                "fmp4",
                "-hls_fmp4_init_filename",
                "init.mp4",
                "-master_pl_name",
                "master.m3u8",
            ]
            .map(String::from),
        );
        a.extend(["-hls_segment_filename".into(), hls.join("%v/seg_%05d.m4s").to_string_lossy().into_owned()]);
        a.extend(["-var_stream_map".into(), vsm.join(" ")]);
        a.push(hls.join("%v/index.m3u8").to_string_lossy().into_owned());
    }
    if format.dash() {
        maps(&mut a);
        let sets = if audio.is_empty() { "id=0,streams=v".to_string() } else { "id=0,streams=v id=1,streams=a".into() };
        a.extend(
            [
                "-f",
                "dash",
                "-seg_duration",
                &seg,
                "-use_template",
                "1",
                "-use_timeline",
                "0",
                "-init_seg_name",
                "init_$RepresentationID$.m4s",
                "-media_seg_name",
                "seg_$RepresentationID$_$Number%05d$.m4s",
                "-adaptation_sets",
                &sets,
            ]
            .map(String::from),
        );
        a.push(out.join("dash/manifest.mpd").to_string_lossy().into_owned());
    }
    a
}

/// The subtitle step's ffmpeg arguments: each text subtitle track `k` of `input` as
/// `out/subs_<k>.vtt`.
pub fn subtitle_args(tracks: &[usize], input: &Path, out: &Path) -> Vec<String> {
    let mut a = super::argv::file_input_args(input);
    for k in tracks {
        a.extend(["-map".into(), format!("0:s:{k}"), "-c:s".into(), "webvtt".into(), "-f".into(), "webvtt".into()]);
        a.push(out.join(format!("subs_{k}.vtt")).to_string_lossy().into_owned());
    }
    a
}

/// A subtitle track of a package: its name (`subs_<k>`) and language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtitleTrack {
    pub name: String,
    #[serde(default)]
    pub language: Option<String>,
}

/// The media playlist of one WebVTT subtitle rendition: the whole track as one
/// segment (`subs.vtt`) of `duration` seconds.
pub fn subtitle_playlist(duration: f64) -> String {
    let d = duration.max(0.001);
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{d:.3},\nsubs.vtt\n#EXT-X-ENDLIST\n",
        d.ceil() as u64
    )
}

/// The multivariant playlist with the subtitle renditions added: one `EXT-X-MEDIA`
/// per track in group `subs` (the first the default), and every variant naming it.
pub fn add_subtitles_to_master(master: &str, tracks: &[SubtitleTrack]) -> String {
    if tracks.is_empty() {
        return master.to_string();
    }
    let media: Vec<String> = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let lang = t.language.as_deref().map(|l| format!(",LANGUAGE=\"{l}\"")).unwrap_or_default();
            let name = t.language.clone().unwrap_or_else(|| t.name.clone());
            let default = if i == 0 { "YES" } else { "NO" };
            format!(
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"{name}\"{lang},DEFAULT={default},AUTOSELECT=YES,URI=\"{}/index.m3u8\"",
                t.name
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut inserted = false;
    for line in master.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            if !inserted {
                out.extend(media.iter().cloned());
                inserted = true;
            }
            out.push(format!("#EXT-X-STREAM-INF:{rest},SUBTITLES=\"subs\""));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n") + "\n"
}

/// How many thumbnails a source of `duration` seconds gets, one every `every` seconds
/// (the first at 0).
pub fn thumbnail_count(duration: f64, every: f64) -> u32 {
    ((duration / every).ceil() as u32).max(1)
}

/// Columns and rows of the sprite sheet holding `count` thumbnails (at most 10 wide).
pub fn sprite_grid(count: u32) -> (u32, u32) {
    let cols = count.clamp(1, 10);
    (cols, count.div_ceil(cols))
}

/// The thumbnail step's ffmpeg arguments: one JPEG every `every_seconds` into
/// `out/thumbnails/`, and a sprite sheet of the same pictures when asked.
pub fn thumbnail_args(t: &Thumbnails, duration: f64, input: &Path, out: &Path) -> Vec<String> {
    let mut a = super::argv::file_input_args(input);
    let pick = format!("fps=1/{},scale={}:-2", t.every_seconds, t.width);
    a.extend(["-map".into(), "0:v:0".into(), "-vf".into(), pick.clone(), "-q:v".into(), "4".into()]);
    a.push(out.join("thumbnails/thumb_%05d.jpg").to_string_lossy().into_owned());
    if t.sprite {
        let (c, r) = sprite_grid(thumbnail_count(duration, t.every_seconds));
        a.extend(["-map".into(), "0:v:0".into(), "-vf".into(), format!("{pick},tile={c}x{r}")]);
        a.extend(["-frames:v".into(), "1".into(), "-q:v".into(), "4".into()]);
        a.push(out.join("thumbnails/sprite.jpg").to_string_lossy().into_owned());
    }
    a
}

/// The WebVTT index of a sprite sheet: one cue per thumbnail, pointing at its tile
/// (`sprite.jpg#xywh=x,y,w,h`). `tile` is one thumbnail's size in pixels.
pub fn sprite_vtt(duration: f64, every: f64, tile: (u32, u32)) -> String {
    let count = thumbnail_count(duration, every);
    let (cols, _) = sprite_grid(count);
    let ts = |t: f64| {
        let ms = (t * 1000.0).round() as u64;
        format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
    };
    let mut s = String::from("WEBVTT\n");
    for i in 0..count {
        let start = f64::from(i) * every;
        let end = (start + every).min(duration.max(start + 0.001));
        let (x, y) = ((i % cols) * tile.0, (i / cols) * tile.1);
        s.push_str(&format!("\n{} --> {}\nsprite.jpg#xywh={x},{y},{},{}\n", ts(start), ts(end), tile.0, tile.1));
    }
    s
}

/// The RFC 6381 codec string of a probed H.264 or HEVC video stream (`avc1.64001f`,
/// `hvc1.2.4.L93.B0`), as HLS `CODECS` names it; None for what it cannot name.
pub fn codec_string(v: &super::media::StreamInfo) -> Option<String> {
    let level = v.level.filter(|l| *l > 0)?;
    let profile = v.profile.as_deref()?;
    match v.codec.as_str() {
        "h264" => {
            // profile_idc and the constraint flags encoders set for each profile.
            let (idc, flags) = match profile {
                "Constrained Baseline" => (0x42, 0xe0),
                "Baseline" => (0x42, 0x00),
                "Main" => (0x4d, 0x40),
                "Extended" => (0x58, 0x00),
                "High" => (0x64, 0x00),
                "High 10" => (0x6e, 0x00),
                "High 4:2:2" => (0x7a, 0x00),
                _ => return None,
            };
            Some(format!("avc1.{idc:02x}{flags:02x}{:02x}", level.min(255)))
        }
        "hevc" => {
            let (idc, compat) = match profile {
                "Main" => (1, 6),
                "Main 10" => (2, 4),
                _ => return None,
            };
            Some(format!("hvc1.{idc}.{compat}.L{level}.B0"))
        }
        _ => None,
    }
}

/// The multivariant playlist with `CODECS` on every variant that lacks it: its video
/// codec (by the variant's folder, its rendition's label) and AAC-LC when it names an
/// audio group (the audio steps encode AAC).
pub fn add_codecs(master: &str, video: &std::collections::HashMap<String, String>) -> String {
    let lines: Vec<&str> = master.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let variant = lines[i + 1..].iter().find(|l| !l.trim().is_empty()).and_then(|uri| uri.split('/').next());
        match (line.strip_prefix("#EXT-X-STREAM-INF:"), variant.and_then(|v| video.get(v))) {
            (Some(attrs), Some(codec)) if !attrs.contains("CODECS=") => {
                let audio = if attrs.contains("AUDIO=") { ",mp4a.40.2" } else { "" };
                out.push(format!("{line},CODECS=\"{codec}{audio}\""));
            }
            _ => out.push(line.to_string()),
        }
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_args_map_every_rendition() {
        let (v0, v1, a0) = (Path::new("/w/360p.mp4"), Path::new("/w/240p.mp4"), Path::new("/w/a.mp4"));
        let a = package_args(
            PackageFormat::Both,
            2.0,
            &[("360p".into(), v0), ("240p".into(), v1)],
            &[("audio_128k".into(), a0)],
            2,
            Path::new("/w/out"),
        )
        .join(" ");
        assert!(a.contains("-var_stream_map v:0,agroup:aud,name:360p v:1,agroup:aud,name:240p a:0,agroup:aud,name:audio_128k_0,default:yes a:1,agroup:aud,name:audio_128k_1"), "{a}");
        assert!(a.contains("-map 2:a:1"), "{a}");
        assert!(a.contains("/w/out/hls/%v/index.m3u8") && a.ends_with("/w/out/dash/manifest.mpd"), "{a}");
        assert!(a.contains("-hls_time 2 ") && a.contains("-seg_duration 2 "), "{a}");
    }

    #[test]
    fn variants_name_their_codecs() {
        use crate::domain::media::StreamInfo;
        let v = |codec: &str, profile: &str, level: i64| StreamInfo {
            kind: "video".into(),
            codec: codec.into(),
            profile: Some(profile.into()),
            level: Some(level),
            ..Default::default()
        };
        assert_eq!(codec_string(&v("h264", "High", 31)).as_deref(), Some("avc1.64001f"));
        assert_eq!(codec_string(&v("h264", "Main", 30)).as_deref(), Some("avc1.4d401e"));
        assert_eq!(codec_string(&v("h264", "Constrained Baseline", 21)).as_deref(), Some("avc1.42e015"));
        assert_eq!(codec_string(&v("hevc", "Main 10", 93)).as_deref(), Some("hvc1.2.4.L93.B0"));
        assert_eq!(codec_string(&v("vp9", "Profile 0", 31)), None);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\n360p/index.m3u8\n\n#EXT-X-STREAM-INF:BANDWIDTH=2,CODECS=\"mp4a.40.2\",AUDIO=\"a\"\naudio/index.m3u8\n";
        let codecs = [("360p".to_string(), "avc1.64001e".to_string())].into_iter().collect();
        let got = add_codecs(master, &codecs);
        assert!(
            got.contains("#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\",CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/"),
            "{got}"
        );
        assert!(
            got.contains("BANDWIDTH=2,CODECS=\"mp4a.40.2\",AUDIO=\"a\"\n"),
            "a variant that has CODECS keeps it: {got}"
        );
    }

    #[test]
    fn subtitle_renditions_join_the_multivariant_playlist() {
        let master = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360\n360p/index.m3u8\n";
        let t = [SubtitleTrack { name: "subs_0".into(), language: Some("eng".into()) }];
        let got = add_subtitles_to_master(master, &t);
        assert!(got.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"eng\",LANGUAGE=\"eng\",DEFAULT=YES,AUTOSELECT=YES,URI=\"subs_0/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360,SUBTITLES=\"subs\"\n"), "{got}");
        let pl = subtitle_playlist(6.0);
        assert!(
            pl.contains("#EXT-X-TARGETDURATION:6\n") && pl.contains("#EXTINF:6.000,\nsubs.vtt\n#EXT-X-ENDLIST"),
            "{pl}"
        );
    }

    #[test]
    fn sprite_index_points_at_tiles() {
        assert_eq!(thumbnail_count(6.0, 2.0), 3);
        assert_eq!(thumbnail_count(6.5, 2.0), 4);
        assert_eq!(sprite_grid(23), (10, 3));
        let vtt = sprite_vtt(5.0, 2.0, (160, 90));
        assert!(vtt.starts_with("WEBVTT\n"));
        assert!(vtt.contains("00:00:00.000 --> 00:00:02.000\nsprite.jpg#xywh=0,0,160,90"), "{vtt}");
        assert!(vtt.contains("00:00:04.000 --> 00:00:05.000\nsprite.jpg#xywh=320,0,160,90"), "{vtt}");
    }
}
