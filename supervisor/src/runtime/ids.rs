//! Ids of pods, containers and execs: 64 random hex digits, as containerd makes them.

use std::io::Read;

/// Fills `buf` from the kernel's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if random_bytes(&mut bytes).is_err() {
        // /dev/urandom missing: fall back on time and pid, still unique per call.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(bytes)
}

/// A CRI name that also becomes part of a path or key: no separators, no dot names.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > 253 || name.contains('/') || name == "." || name == ".." || name.contains('\0')
    {
        return Err(format!(
            "{kind} name {name:?} is invalid: no '/', no '.' or '..', at most 253 bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn names_with_separators_are_refused() {
        assert!(check_name("pod", "web").is_ok());
        for bad in ["", "..", "a/b", "../x"] {
            assert!(check_name("pod", bad).is_err(), "{bad}");
        }
    }
}
