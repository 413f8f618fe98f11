//! Disk usage of a directory tree: allocated bytes and inodes, hard links counted once.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// (bytes allocated on disk, inodes) of the tree at `root`, symlinks not followed.
pub fn tree_usage(root: &Path) -> (u64, u64) {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        bytes += meta.blocks() * 512;
        inodes += 1;
        if meta.is_dir() {
            if let Ok(dir) = std::fs::read_dir(&path) {
                stack.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hardlinks_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 8192]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let (bytes, inodes) = tree_usage(dir.path());
        assert_eq!(inodes, 2);
        assert!((8192..3 * 8192).contains(&bytes), "{bytes}");
    }
}
