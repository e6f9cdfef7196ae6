//! Operator allow-lists of network destinations (`--rtmp-allow`; later URL inputs,
//! webhooks and object stores): which hosts a job may make a worker connect to.
//!
//! A pattern is `host`, `host:port`, `*.domain` (any subdomain, not the domain itself)
//! or `*` (anything). Hosts compare case-insensitively; IPv6 literals are written in
//! brackets (`[::1]:1935`).

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.len() > 253 {
            return Err(format!("invalid host pattern '{s}'"));
        }
        let (host, port) = split_host_port(&s).ok_or_else(|| format!("invalid host pattern '{s}'"))?;
        let wildcard_ok = host == "*" || host.strip_prefix("*.").is_some_and(|d| !d.contains('*'));
        if host.contains('*') && !wildcard_ok {
            return Err(format!("invalid host pattern '{s}': '*' may only be the whole host or a leading '*.'"));
        }
        Ok(HostPattern { host: host.to_string(), port })
    }

    /// `*` or `*.domain`: a pattern that admits hosts the operator did not name.
    pub fn is_wildcard(&self) -> bool {
        self.host.contains('*')
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => self.host == host,
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((h, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((h, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((s, None)),
    }
    .filter(|(h, _)| {
        !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | ':'))
    })
}

/// Host and port of an `rtmp://` / `rtmps://` URL (default ports 1935 and 443);
/// credentials (`user:pass@`) are skipped.
pub fn rtmp_destination(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "rtmp" => 1935,
        "rtmps" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map(|(_, a)| a).unwrap_or(authority);
    let (host, port) = split_host_port(authority)?;
    if host.contains('*') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.unwrap_or(default)))
}

/// Is `host:port` allowed by any of `patterns`? Returns the refusal text otherwise.
pub fn check_destination(
    what: &str,
    host: &str,
    port: u16,
    patterns: &[HostPattern],
    rule: &str,
) -> Result<(), String> {
    if patterns.iter().any(|p| p.matches(host, port)) {
        return Ok(());
    }
    let allowed = if patterns.is_empty() {
        "none".to_string()
    } else {
        patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    };
    Err(format!("{what} destination {host}:{port} is not allowed ({rule}; allowed: {allowed})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_hosts_and_ports() {
        let cases = [
            ("live.example.com", "live.example.com", 1935, true),
            ("live.example.com", "LIVE.example.com", 1935, true),
            ("live.example.com:1935", "live.example.com", 1936, false),
            ("*.example.com", "a.b.example.com", 1, true),
            ("*.example.com", "example.com", 1935, false),
            ("*.example.com", "evil-example.com", 1935, false),
            ("*", "anything", 22, true),
            ("127.0.0.1:1935", "127.0.0.1", 1935, true),
            ("[::1]:1935", "::1", 1935, true),
        ];
        for (pat, host, port, want) in cases {
            assert_eq!(HostPattern::parse(pat).unwrap().matches(host, port), want, "{pat} vs {host}:{port}");
        }
        for bad in ["", "a*b.com", "host:notaport", "exa mple.com", "*.*.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rtmp_destinations() {
        let cases = [
            ("rtmp://live.example.com/app/key", Some(("live.example.com", 1935))),
            ("rtmps://live.example.com/app", Some(("live.example.com", 443))),
            ("rtmp://user:pw@10.0.0.5:1936/app/key", Some(("10.0.0.5", 1936))),
            ("rtmp://[::1]:1935/live", Some(("::1", 1935))),
            ("http://example.com/", None),
            ("rtmp://:1935/x", None),
        ];
        for (url, want) in cases {
            assert_eq!(rtmp_destination(url), want.map(|(h, p)| (h.to_string(), p)), "{url}");
        }
        let allow = [HostPattern::parse("live.example.com").unwrap()];
        assert!(check_destination("rtmp", "live.example.com", 1935, &allow, "--rtmp-allow").is_ok());
        let e = check_destination("rtmp", "127.0.0.1", 22, &allow, "--rtmp-allow").unwrap_err();
        assert!(e.contains("127.0.0.1:22") && e.contains("--rtmp-allow") && e.contains("live.example.com"), "{e}");
    }
}
