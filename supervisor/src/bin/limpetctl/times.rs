//! Times as crictl shows and reads them: RFC 3339 with nanoseconds (UTC), "5 minutes ago"
//! ages, and `--since` values (a duration back from now, a timestamp, or unix seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS: i64 = 1_000_000_000;

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2024-05-01T10:20:30.123456789Z`, trailing zeros of the fraction dropped (Go's
/// RFC3339Nano).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(NANOS);
    let frac = ns.rem_euclid(NANOS);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` into unix nanoseconds; no zone means UTC.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut dp = date.split('-');
    let (y, mo, d) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // the zone: Z, +hh:mm, -hh:mm, or none
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':')?;
        (
            c,
            sign * (i64::from(num(h)?) * 3600 + i64::from(num(m)?) * 60),
        )
    } else {
        (rest, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, b),
        None => (clock, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, sec) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if t.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut nanos = 0i64;
    if !frac.is_empty() {
        num(frac)?;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let secs = days_from_civil(i64::from(y), mo, d) * 86_400
        + i64::from(h) * 3600
        + i64::from(mi) * 60
        + i64::from(sec)
        - offset;
    secs.checked_mul(NANOS)?.checked_add(nanos)
}

/// A Go duration: `90s`, `42m`, `1h30m`, `1.5h`, `300ms`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let n: f64 = rest[..n_end].parse().ok()?;
        let tail = &rest[n_end..];
        let u_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let unit = match &tail[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * unit;
        rest = &tail[u_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// `--since`: a duration back from `now`, an RFC 3339 time, or unix seconds.
pub fn parse_since(s: &str, now: i64) -> Result<i64, String> {
    if let Some(d) = parse_go_duration(s) {
        return Ok(now - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * NANOS as f64) as i64);
    }
    Err(format!(
        "--since {s:?}: give a duration (42m), a time (2024-01-02T13:23:37Z) or unix seconds"
    ))
}

/// An age as docker and crictl word it ("Less than a second", "About a minute", "3 hours").
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// "12 seconds ago" for a unix-nanosecond time.
pub fn ago(ns: i64) -> String {
    let d = now_nanos().saturating_sub(ns).max(0);
    format!(
        "{} ago",
        human_duration(Duration::from_nanos(u64::try_from(d).unwrap_or(0)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        let t = 1_700_000_000_123_456_789;
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456789Z"), Some(t));
        assert_eq!(rfc3339(1_700_000_000_100_000_000), "2023-11-14T22:13:20.1Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.1+01:00"),
            Some(1_700_000_000_100_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00"),
            Some(1_709_164_800 * NANOS)
        );
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("stdout"), None);
    }

    #[test]
    fn durations_and_since() {
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("5"), None);
        let now = 1_000 * NANOS;
        assert_eq!(parse_since("10s", now), Ok(990 * NANOS));
        assert_eq!(parse_since("1970-01-01T00:01:00Z", now), Ok(60 * NANOS));
        assert_eq!(parse_since("30", now), Ok(30 * NANOS));
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn ages_read_like_crictl() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(42)), "42 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3700)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
    }
}
