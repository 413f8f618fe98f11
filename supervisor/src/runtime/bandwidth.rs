//! The pod bandwidth annotations (`kubernetes.io/ingress-bandwidth`, `…/egress-bandwidth`,
//! Kubernetes quantities in bits per second) as the CNI `bandwidth` capability wants them.

use std::collections::HashMap;

use crate::network::Bandwidth;

const INGRESS: &str = "kubernetes.io/ingress-bandwidth";
const EGRESS: &str = "kubernetes.io/egress-bandwidth";
/// Burst as containerd sets it: effectively unlimited, so the rate alone shapes.
const BURST: u64 = u32::MAX as u64;

/// Parses a Kubernetes quantity such as `10M`, `1Gi` or `500k`.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && v >= 1.0).then_some(v as u64)
}

pub fn from_annotations(a: &HashMap<String, String>) -> Option<Bandwidth> {
    let ingress = a.get(INGRESS).and_then(|v| parse_quantity(v));
    let egress = a.get(EGRESS).and_then(|v| parse_quantity(v));
    if ingress.is_none() && egress.is_none() {
        return None;
    }
    Some(Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: if ingress.is_some() { BURST } else { 0 },
        egress_rate: egress.unwrap_or(0),
        egress_burst: if egress.is_some() { BURST } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Ki"), Some(1024));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("fast"), None);
        assert_eq!(parse_quantity("1X"), None);
    }

    #[test]
    fn annotations_to_bandwidth() {
        let a = HashMap::from([(INGRESS.to_string(), "1M".to_string())]);
        let b = from_annotations(&a).unwrap();
        assert_eq!((b.ingress_rate, b.egress_rate), (1_000_000, 0));
        assert!(from_annotations(&HashMap::new()).is_none());
    }
}
