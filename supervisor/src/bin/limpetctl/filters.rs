//! What `pods` and `ps` share: label selectors, name patterns, newest-first trimming and
//! short ids.

use std::collections::HashMap;

/// crictl shows ids cut to this many characters unless `--no-trunc`.
pub const TRUNCATED_ID: usize = 13;

/// `--label k=v` (repeatable) into a selector.
pub fn labels(pairs: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for p in pairs {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains('=') => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => anyhow::bail!("--label {p:?}: expected key=value"),
        }
    }
    Ok(out)
}

/// A name filter. crictl takes a regular expression; this takes what people give it in
/// practice: a substring, optionally anchored with `^` and/or `$`.
#[derive(Debug, Clone, Default)]
pub struct Pattern {
    text: String,
    start: bool,
    end: bool,
}

impl Pattern {
    pub fn new(p: Option<&str>) -> Pattern {
        let Some(p) = p else {
            return Pattern::default();
        };
        let (start, p) = match p.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let (end, p) = match p.strip_suffix('$') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        Pattern {
            text: p.to_string(),
            start,
            end,
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        match (self.start, self.end) {
            (true, true) => s == self.text,
            (true, false) => s.starts_with(&self.text),
            (false, true) => s.ends_with(&self.text),
            (false, false) => s.contains(&self.text),
        }
    }
}

/// How many of the newest to keep: `--latest` one, `--last N` N, else all.
pub fn keep(total: usize, latest: bool, last: usize) -> usize {
    let n = if last > 0 {
        last
    } else if latest {
        1
    } else {
        total
    };
    n.min(total)
}

pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(TRUNCATED_ID).collect()
    }
}

/// An image reference as the IMAGE column shows it: a digest id cut short.
pub fn short_image(image: &str, no_trunc: bool) -> String {
    match image.split_once(':') {
        Some(("sha256", hex)) if !no_trunc && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            short_id(hex, false)
        }
        _ => image.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(labels(&["a=b".into()]).unwrap()["a"], "b");
        assert!(labels(&["a".into()]).is_err());
        assert!(labels(&["=b".into()]).is_err());
        assert!(Pattern::new(None).matches("x"));
        assert!(Pattern::new(Some("ng")).matches("nginx"));
        assert!(Pattern::new(Some("^ng")).matches("nginx"));
        assert!(!Pattern::new(Some("^gi")).matches("nginx"));
        assert!(Pattern::new(Some("^nginx$")).matches("nginx"));
        assert!(!Pattern::new(Some("^nginx$")).matches("nginx2"));
        assert_eq!(keep(5, true, 0), 1);
        assert_eq!(keep(5, false, 3), 3);
        assert_eq!(keep(2, false, 3), 2);
        assert_eq!(keep(5, false, 0), 5);
        assert_eq!(short_id("0123456789abcdef", false), "0123456789abc");
        assert_eq!(
            short_image("sha256:0123456789abcdef", false),
            "0123456789abc"
        );
        assert_eq!(short_image("busybox:latest", false), "busybox:latest");
    }
}
