//! Secrets inside stream URLs, hidden before text is logged or stored: the user info
//! (`user:password@`), the stream key (every path segment after the application) and
//! the query of `rtmp://`, `rtmps://`, `srt://` and `rtsp://` URLs. ffmpeg repeats the
//! URL in its errors, so worker errors and log tails go through this too.

const SCHEMES: &[&str] = &["rtmp://", "rtmps://", "rtmpt://", "rtmpe://", "srt://", "rtsp://", "rtsps://"];

/// One URL (no surrounding text) with its secrets replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, _)) => (b, Some("***")),
        None => (rest, None),
    };
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let mut segments = path.split('/');
    let app = segments.next().unwrap_or("");
    let has_key = segments.any(|s| !s.is_empty());
    let mut out = format!("{scheme}://{authority}");
    if !path.is_empty() {
        out.push('/');
        out.push_str(app);
    }
    if has_key {
        out.push_str("/***");
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Every stream URL inside `text`, redacted; the rest unchanged.
pub fn redact_urls(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let next = SCHEMES.iter().filter_map(|s| lower[i..].find(s).map(|p| i + p)).min();
        let Some(start) = next else {
            out.push_str(&text[i..]);
            break;
        };
        out.push_str(&text[i..start]);
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ',' | ')' | ']'))
            .map(|e| start + e)
            .unwrap_or(text.len());
        // ffmpeg prints "URL: error" — keep the colon that follows a URL out of it.
        let (url_end, tail) = match text[start..end].strip_suffix(':') {
            Some(u) => (start + u.len(), ":"),
            None => (end, ""),
        };
        out.push_str(&redact_url(&text[start..url_end]));
        out.push_str(tail);
        i = end;
    }
    out
}

/// A job's parameters as operators see them (API views, not the worker's copy):
/// stream keys hidden, stream URLs without credentials or keys.
pub fn redact_parameters(params: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    if let Some(k) = params.get_mut("stream_key")
        && !k.is_null()
    {
        *k = Value::String("***".into());
    }
    for key in ["rtmp_url", "output", "input"] {
        if let Some(Value::String(u)) = params.get_mut(key) {
            *u = redact_urls(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        let cases = [
            ("rtmp://live.example.com/app/sk_live_123", "rtmp://live.example.com/app/***"),
            ("rtmp://user:pw@host:1935/live/key", "rtmp://***@host:1935/live/***"),
            ("rtmps://host/app", "rtmps://host/app"),
            ("rtmp://host/app/key?token=abc", "rtmp://host/app/***?***"),
            ("srt://host:9000?passphrase=x", "srt://host:9000?***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn parameters_lose_their_secrets() {
        let mut p = serde_json::json!({"rtmp_url": "rtmp://u:p@h/app/key", "stream_key": "sk", "codec": "h264"})
            .as_object()
            .unwrap()
            .clone();
        redact_parameters(&mut p);
        assert_eq!(
            serde_json::Value::Object(p),
            serde_json::json!({"rtmp_url": "rtmp://***@h/app/***", "stream_key": "***", "codec": "h264"})
        );
    }

    #[test]
    fn text_around_urls_is_kept() {
        let t = "[rtmp @ 0x1] Server error\nrtmp://u:p@h/live/secret: Connection refused; also RTMP://H/a/b2";
        let r = redact_urls(t);
        assert_eq!(r, "[rtmp @ 0x1] Server error\nrtmp://***@h/live/***: Connection refused; also RTMP://H/a/***");
        assert!(!r.contains("secret") && !r.contains("u:p"));
        assert_eq!(redact_urls("no urls here"), "no urls here");
    }
}
