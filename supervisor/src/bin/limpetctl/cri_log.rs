//! The CRI log file format: one line per chunk, `<RFC3339Nano> <stdout|stderr> <P|F> <text>`.
//! A `P` (partial) chunk continues in the next line of the same stream; `F` ends the record.
//! This joins partials back into whole records.

use crate::times::parse_rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One whole record: the time of its first chunk, and its text with the newline the
/// container wrote (none when the record is still partial at the end of a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: String,
    pub nanos: Option<i64>,
    pub stream: Stream,
    pub text: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Joiner {
    pending: [Option<Record>; 2],
}

fn slot(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Splits one line (without its `\n`) into time, stream, whether it is partial, and text.
pub fn parse_line(line: &[u8]) -> Option<(&str, Stream, bool, &[u8])> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = parts.next()?;
    // Tags are `:`-separated; the first says partial or full.
    let partial = match tags.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return None,
    };
    Some((time, stream, partial, parts.next().unwrap_or(b"")))
}

impl Joiner {
    /// Feeds one line; returns the record it completes, if any. Lines that are not in the
    /// CRI format are skipped, as kubelet does.
    pub fn push(&mut self, line: &[u8]) -> Option<Record> {
        let (time, stream, partial, text) = parse_line(line)?;
        let pending = &mut self.pending[slot(stream)];
        let rec = pending.get_or_insert_with(|| Record {
            time: time.to_string(),
            nanos: parse_rfc3339(time),
            stream,
            text: Vec::new(),
        });
        rec.text.extend_from_slice(text);
        if partial {
            return None;
        }
        rec.text.push(b'\n');
        pending.take()
    }

    /// Records still waiting for their last chunk, oldest first.
    pub fn flush(&mut self) -> Vec<Record> {
        let mut out: Vec<Record> = self.pending.iter_mut().filter_map(Option::take).collect();
        out.sort_by_key(|r| r.nanos);
        out
    }
}

/// Whole lines from a byte buffer; what follows the last `\n` stays in `rest`.
pub fn split_lines(rest: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(i) = rest[start..].iter().position(|b| *b == b'\n') {
        lines.push(rest[start..start + i].to_vec());
        start += i + 1;
    }
    rest.drain(..start);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_partials_per_stream() {
        let mut j = Joiner::default();
        assert_eq!(j.push(b"2024-01-01T00:00:00.5Z stdout P hello "), None);
        // an interleaved stderr record does not disturb the stdout one
        let err = j.push(b"2024-01-01T00:00:00.6Z stderr F oops").unwrap();
        assert_eq!(
            (err.stream, err.text.as_slice()),
            (Stream::Stderr, &b"oops\n"[..])
        );
        let out = j.push(b"2024-01-01T00:00:00.7Z stdout F world").unwrap();
        assert_eq!(out.text, b"hello world\n");
        assert_eq!(out.time, "2024-01-01T00:00:00.5Z");
        assert_eq!(out.nanos, Some(1_704_067_200_500_000_000));
        // an empty full line is an empty record; junk is skipped
        assert_eq!(
            j.push(b"2024-01-01T00:00:01Z stdout F").unwrap().text,
            b"\n"
        );
        assert_eq!(j.push(b"garbage"), None);
        assert_eq!(j.push(b"2024-01-01T00:00:01Z stdin F x"), None);
        j.push(b"2024-01-01T00:00:02Z stdout P tail");
        let left = j.flush();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].text, b"tail");
    }

    #[test]
    fn lines_keep_the_unfinished_rest() {
        let mut buf = b"a\nbc\nd".to_vec();
        assert_eq!(split_lines(&mut buf), vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(buf, b"d");
        assert!(split_lines(&mut buf).is_empty());
    }
}
