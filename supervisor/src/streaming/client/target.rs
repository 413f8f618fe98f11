//! Where a streaming URL points: scheme, host, port and request target.

use super::ClientError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub tls: bool,
    /// The host name or IP address, without IPv6 brackets (for DNS, TCP and TLS).
    pub host: String,
    pub port: u16,
    /// What the `Host` header carries: the host (bracketed if IPv6), and a given port.
    pub host_header: String,
    /// Path and query, at least "/".
    pub path_and_query: String,
}

impl Target {
    /// Accepts http, https, ws and wss URLs.
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") | Some("ws") => false,
            Some("https") | Some("wss") => true,
            Some(s) => return Err(bad(&format!("scheme {s:?} is not http(s) or ws(s)"))),
            None => return Err(bad("no scheme")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info in a streaming URL is not supported"));
        }
        let bracketed = authority.host();
        if bracketed.is_empty() {
            return Err(bad("no host"));
        }
        let host = bracketed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bracketed)
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host_header = match uri.port_u16() {
            Some(p) => format!("{bracketed}:{p}"),
            None => bracketed.to_string(),
        };
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(Target {
            tls,
            host,
            port,
            host_header,
            path_and_query,
        })
    }

    /// `host:port` for connecting (IPv6 bracketed).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same target as a ws:// or wss:// URL.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.host_header, self.path_and_query)
    }
}

/// `url` with one `port=P` query parameter per port, as WebSocket port forwarding wants.
pub(crate) fn with_ports(url: &str, ports: &[u16]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = base.to_string();
    for p in ports {
        let sep = match out.find('?') {
            None => "?",
            Some(i) if i + 1 == out.len() || out.ends_with('&') => "",
            Some(_) => "&",
        };
        out.push_str(sep);
        out.push_str("port=");
        out.push_str(&p.to_string());
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tls_urls() {
        let t = Target::parse("http://127.0.0.1:10010/exec/abc?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 10010,
                host_header: "127.0.0.1:10010".into(),
                path_and_query: "/exec/abc?x=1".into(),
            }
        );
        assert_eq!(t.addr(), "127.0.0.1:10010");
        assert_eq!(t.ws_url(), "ws://127.0.0.1:10010/exec/abc?x=1");

        let t = Target::parse("https://node.example").unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.host_header, "node.example");
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.ws_url(), "wss://node.example/");
    }

    #[test]
    fn ipv6_hosts_lose_brackets_for_dialing_only() {
        let t = Target::parse("http://[::1]:8080/attach/t").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.addr(), "[::1]:8080");
        assert_eq!(t.host_header, "[::1]:8080");
        assert_eq!(t.ws_url(), "ws://[::1]:8080/attach/t");
    }

    #[test]
    fn refuses_what_it_cannot_dial() {
        for url in [
            "/exec/abc",
            "ftp://host/x",
            "http://user:pw@host/x",
            "not a url",
        ] {
            let err = Target::parse(url).unwrap_err();
            assert!(matches!(err, ClientError::Url { .. }), "{url}: {err}");
        }
    }

    #[test]
    fn port_query_is_appended() {
        assert_eq!(
            with_ports("http://h/portforward/t", &[80, 8080]),
            "http://h/portforward/t?port=80&port=8080"
        );
        assert_eq!(
            with_ports("http://h/pf/t?a=b", &[5]),
            "http://h/pf/t?a=b&port=5"
        );
        assert_eq!(with_ports("http://h/pf/t?", &[5]), "http://h/pf/t?port=5");
        assert_eq!(with_ports("http://h/pf#f", &[1]), "http://h/pf?port=1#f");
        assert_eq!(with_ports("http://h/pf", &[]), "http://h/pf");
    }
}
