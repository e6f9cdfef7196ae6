//! Parser for ffmpeg's `-progress` stream: `key=value` lines in blocks ending with
//! `progress=continue` or `progress=end`.

/// One completed progress block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressBlock {
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub total_size: Option<u64>,
    pub out_time_us: Option<i64>,
    pub speed: Option<f64>,
    pub end: bool,
}

impl ProgressBlock {
    /// Percent of `expected_seconds` reached, 0–100.
    pub fn percent(&self, expected_seconds: Option<f64>) -> Option<f64> {
        let t = self.out_time_us? as f64 / 1e6;
        match expected_seconds {
            Some(d) if d > 0.0 => Some((t / d * 100.0).clamp(0.0, 100.0)),
            _ => None,
        }
    }

    /// Seconds left at the current speed.
    pub fn eta_seconds(&self, expected_seconds: Option<f64>) -> Option<f64> {
        let t = self.out_time_us? as f64 / 1e6;
        let d = expected_seconds?;
        let speed = self.speed.filter(|s| *s > 0.0)?;
        Some(((d - t).max(0.0)) / speed)
    }
}

impl ProgressBlock {
    /// The figures of a finished encode: the `progress=end` block's, with any field it
    /// leaves out (ffmpeg writes `N/A` for some at the end) taken from the block before.
    pub fn finalized(end: &ProgressBlock, before: Option<&ProgressBlock>) -> ProgressBlock {
        let b = before.cloned().unwrap_or_default();
        ProgressBlock {
            frame: end.frame.or(b.frame),
            fps: end.fps.filter(|f| *f > 0.0).or(b.fps.filter(|f| *f > 0.0)),
            bitrate_kbps: end.bitrate_kbps.or(b.bitrate_kbps),
            total_size: end.total_size.or(b.total_size),
            out_time_us: end.out_time_us.or(b.out_time_us),
            speed: end.speed.or(b.speed),
            end: end.end,
        }
    }
}

/// Feeds lines, yields a block at each `progress=` line.
#[derive(Debug, Default)]
pub struct ProgressParser {
    cur: ProgressBlock,
}

fn num<T: std::str::FromStr>(v: &str) -> Option<T> {
    v.trim().parse().ok()
}

impl ProgressParser {
    pub fn feed(&mut self, line: &str) -> Option<ProgressBlock> {
        let (k, v) = line.trim().split_once('=')?;
        let v = v.trim();
        match k.trim() {
            "frame" => self.cur.frame = num(v),
            "fps" => self.cur.fps = num(v),
            // "1234.5kbits/s" or "N/A"
            "bitrate" => self.cur.bitrate_kbps = v.strip_suffix("kbits/s").and_then(num),
            "total_size" => self.cur.total_size = num(v),
            // out_time_ms is also microseconds (an ffmpeg quirk); prefer out_time_us.
            "out_time_us" => self.cur.out_time_us = num(v).or(self.cur.out_time_us),
            "out_time_ms" if self.cur.out_time_us.is_none() => self.cur.out_time_us = num(v),
            "speed" => self.cur.speed = v.strip_suffix('x').and_then(num),
            "progress" => {
                let mut done = std::mem::take(&mut self.cur);
                done.end = v == "end";
                return Some(done);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks() {
        let text = "frame=30\nfps=29.97\nstream_0_0_q=28.0\nbitrate= 512.3kbits/s\ntotal_size=65536\nout_time_us=1000000\nout_time_ms=1000000\nout_time=00:00:01.000000\ndup_frames=0\nspeed=2.5x\nprogress=continue\nframe=60\nout_time_us=N/A\nbitrate=N/A\nspeed=N/A\nprogress=end\n";
        let mut p = ProgressParser::default();
        let blocks: Vec<ProgressBlock> = text.lines().filter_map(|l| p.feed(l)).collect();
        assert_eq!(blocks.len(), 2);
        let b = &blocks[0];
        assert_eq!((b.frame, b.fps, b.bitrate_kbps, b.total_size), (Some(30), Some(29.97), Some(512.3), Some(65536)));
        assert_eq!((b.out_time_us, b.speed, b.end), (Some(1_000_000), Some(2.5), false));
        assert_eq!(b.percent(Some(2.0)), Some(50.0));
        assert_eq!(b.eta_seconds(Some(2.0)), Some(0.4));
        let e = &blocks[1];
        assert!(e.end);
        assert_eq!((e.frame, e.out_time_us, e.speed), (Some(60), None, None));
    }

    #[test]
    fn final_figures_prefer_the_end_block() {
        let before = ProgressBlock {
            frame: Some(50),
            fps: Some(25.0),
            out_time_us: Some(2_000_000),
            speed: Some(2.0),
            ..Default::default()
        };
        let end = ProgressBlock { frame: Some(60), fps: Some(0.0), out_time_us: None, end: true, ..Default::default() };
        let f = ProgressBlock::finalized(&end, Some(&before));
        assert_eq!(
            (f.frame, f.fps, f.out_time_us, f.speed, f.end),
            (Some(60), Some(25.0), Some(2_000_000), Some(2.0), true)
        );
        let alone = ProgressBlock::finalized(&end, None);
        assert_eq!((alone.frame, alone.fps), (Some(60), None), "a zero fps is no figure");
    }

    #[test]
    fn garbage_is_ignored() {
        let mut p = ProgressParser::default();
        for l in ["", "noequals", "frame=abc", "=", "speed=fastx"] {
            assert!(p.feed(l).is_none());
        }
        let b = p.feed("progress=continue").unwrap();
        assert_eq!(b, ProgressBlock::default());
        assert_eq!(b.percent(Some(1.0)), None);
        assert_eq!(
            ProgressBlock { out_time_us: Some(5_000_000), ..Default::default() }.percent(Some(2.0)),
            Some(100.0)
        );
    }
}
