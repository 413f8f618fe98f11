//! The shim's own log, written in logfmt to the bundle's `log` FIFO, which the master reads
//! and copies to its own log. Writes never block: a line that finds the FIFO full (or
//! nobody reading) is dropped rather than stalling the shim.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

struct FifoLogger {
    out: File,
    level: log::LevelFilter,
}

impl log::Log for FifoLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // Libraries (ttrpc) speak only of problems unless debugging.
        let own = m.target().starts_with(env!("CARGO_CRATE_NAME"));
        m.level() <= self.level
            && (own || m.level() <= log::Level::Warn || self.level >= log::LevelFilter::Debug)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let msg = r
            .args()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        let line = format!(
            "time=\"{}\" level={level} msg=\"{msg}\" runtime=limpet\n",
            rfc3339(SystemTime::now())
        );
        let _ = (&self.out).write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Logs to `<bundle>/log` when the master opened it for reading; otherwise nowhere.
pub fn init(bundle: &Path, debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    if let Ok(out) = opened {
        if log::set_boxed_logger(Box::new(FifoLogger { out, level })).is_ok() {
            log::set_max_level(level);
        }
    }
}

/// UTC time as RFC 3339 with nanoseconds, as containerd's logs print it.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_764_100_000, 123_456_789);
        assert_eq!(rfc3339(t), "2025-11-25T19:46:40.123456789Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert!(rfc3339(leap).starts_with("2000-02-29T"));
    }
}
