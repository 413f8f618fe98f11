//! Output: JSON and YAML with crictl's camelCase keys, aligned tables, human sizes.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
    Table,
}

/// Serializes with protobuf-JSON key names (repo_tags becomes repoTags).
pub fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    camel(serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}

fn camel(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (camel_key(&k), camel(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(camel).collect()),
        v => v,
    }
}

fn camel_key(k: &str) -> String {
    let k = k.strip_prefix("r#").unwrap_or(k);
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints a JSON value as JSON or YAML.
pub fn print(value: &serde_json::Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// Left-aligned columns separated by three spaces, as crictl's tabwriter prints them.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Decimal sizes with four significant digits: 1.44MB, 4.27kB, 812B.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    let int_digits = if v < 1.0 {
        1
    } else {
        (v.log10().floor() as i32 + 1).max(1)
    };
    let decimals = (4 - int_digits).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_keys() {
        assert_eq!(human_size(812), "812B");
        assert_eq!(human_size(1_440_000), "1.44MB");
        assert_eq!(human_size(4_270), "4.27kB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(camel_key("repo_tags"), "repoTags");
        assert_eq!(camel_key("r#type"), "type");
        assert_eq!(
            table(&[
                vec!["A".into(), "BB".into()],
                vec!["ccc".into(), "d".into()]
            ]),
            "A     BB\nccc   d\n"
        );
    }
}
