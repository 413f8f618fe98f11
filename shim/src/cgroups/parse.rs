//! Reading and writing cgroup files: the small text formats v1 and v2 share.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path};
use std::thread;
use std::time::Duration;

use super::CgroupError;

/// The whole of a small file.
pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The whole of a small file, or `None` if it does not exist (controller not enabled).
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// An unsigned counter as the kernel prints it. Negative values (v1 prints -1 for "no
/// limit" in places) read as 0, as containerd's cgroups library does.
pub(super) fn parse_uint(s: &str) -> Option<u64> {
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    let digits = s.strip_prefix('-')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(0)
}

/// A file holding one number, or `max`, read as `max_value`. `None` if the file does not
/// exist.
pub(super) fn read_uint(path: &Path, max_value: u64) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let text = text.trim();
    if text == "max" {
        return Ok(Some(max_value));
    }
    parse_uint(text)
        .map(Some)
        .ok_or_else(|| parse_error(path, format!("not a number: {text:?}")))
}

/// Calls `f` with each `key value` line of a file such as memory.stat. Returns false, having
/// called nothing, if the file does not exist.
pub(super) fn read_kv(path: &Path, f: impl FnMut(&str, u64)) -> Result<bool, CgroupError> {
    match read_optional(path)? {
        Some(text) => for_each_kv(path, &text, f).map(|()| true),
        None => Ok(false),
    }
}

/// Calls `f` with each `key value` line of `text`, read from `path`.
pub(super) fn for_each_kv(
    path: &Path,
    text: &str,
    mut f: impl FnMut(&str, u64),
) -> Result<(), CgroupError> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(parse_error(path, format!("not a key-value line: {line:?}")));
        };
        let value = parse_uint(value)
            .ok_or_else(|| parse_error(path, format!("not a number in line {line:?}")))?;
        f(key, value);
    }
    Ok(())
}

pub(super) fn parse_error(path: &Path, reason: String) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        reason,
    }
}

/// Writes `pid` into a `cgroup.procs` file. The kernel refuses with EINVAL a process that
/// is between states (exiting, being forked); retry briefly as containerd does.
pub(super) fn write_pid(path: &Path, pid: i32) -> Result<(), CgroupError> {
    let wrap = |source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(wrap)?;
    let pid = pid.to_string();
    let mut attempts = 0;
    loop {
        match file.write_all(pid.as_bytes()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && attempts < 4 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(30));
            }
            Err(e) => return Err(wrap(e)),
        }
    }
}

/// A cgroup path as given in options (`/a/b` or `a/b`) made relative to a hierarchy root,
/// refusing anything that could leave it.
pub(super) fn relative_cgroup_path(path: &str) -> Result<&str, CgroupError> {
    let invalid = |reason| CgroupError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let relative = path.trim_start_matches('/');
    if Path::new(relative)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid("must not contain `..`"));
    }
    Ok(relative)
}

/// Huge page sizes the kernel supports, named as the hugetlb controller names its files
/// (`2MB`, `1GB`, `64KB`), from the `hugepages-<N>kB` entries of `dir`; sorted by name.
pub(super) fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|name| {
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(if kb >= 1 << 20 {
                format!("{}GB", kb >> 20)
            } else if kb >= 1 << 10 {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            })
        })
        .collect()
}

/// Lines `DEVICE hca_handle=N hca_object=N` of rdma.current and rdma.max as (device,
/// handles, objects); `max` reads as u32::MAX, other lines are skipped.
pub(super) fn rdma_lines(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(a), Some(b), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let (mut handles, mut objects) = (0, 0);
        for kv in [a, b] {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let value = match value {
                "max" => u32::MAX,
                v => match parse_uint(v).and_then(|v| u32::try_from(v).ok()) {
                    Some(v) => v,
                    None => continue,
                },
            };
            match key {
                "hca_handle" => handles = value,
                "hca_object" => objects = value,
                _ => {}
            }
        }
        Some((device, handles, objects))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uints_follow_the_kernel_and_containerd() {
        assert_eq!(parse_uint("0"), Some(0));
        assert_eq!(parse_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_uint("-1"), Some(0));
        assert_eq!(parse_uint("-99999999999999999999999"), Some(0));
        assert_eq!(parse_uint("-"), None);
        assert_eq!(parse_uint("12a"), None);
        assert_eq!(parse_uint(""), None);
    }

    #[test]
    fn key_value_lines() {
        let mut seen = Vec::new();
        for_each_kv(Path::new("f"), "a 1\n\nb -1\nc 3\n", |k, v| {
            seen.push((k.to_string(), v))
        })
        .unwrap();
        assert_eq!(
            seen,
            [("a".into(), 1), ("b".into(), 0), ("c".into(), 3)] as [(String, u64); 3]
        );
        let err = for_each_kv(Path::new("/x/memory.stat"), "a 1 2\n", |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("/x/memory.stat"), "{err}");
        assert!(for_each_kv(Path::new("f"), "a b\n", |_, _| {}).is_err());
    }

    #[test]
    fn cgroup_paths_stay_inside_the_hierarchy() {
        assert_eq!(relative_cgroup_path("/a/b").unwrap(), "a/b");
        assert_eq!(relative_cgroup_path("a/./b").unwrap(), "a/./b");
        assert_eq!(relative_cgroup_path("/").unwrap(), "");
        assert!(relative_cgroup_path("/a/../../etc").is_err());
        assert!(relative_cgroup_path("..").is_err());
        assert!(relative_cgroup_path("a\0b").is_err());
    }

    #[test]
    fn hugepage_size_names() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "hugepages-2048kB",
            "hugepages-1048576kB",
            "hugepages-64kB",
            "other",
        ] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        assert_eq!(hugepage_sizes(dir.path()), ["1GB", "2MB", "64KB"]);
        assert!(hugepage_sizes(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn rdma_device_lines() {
        let text =
            "mlx4_0 hca_handle=2 hca_object=max\nbad line\nmlx5_1 hca_object=7 hca_handle=x\n";
        assert_eq!(
            rdma_lines(text).collect::<Vec<_>>(),
            [("mlx4_0", 2, u32::MAX), ("mlx5_1", 0, 7)]
        );
    }

    #[test]
    fn write_pid_needs_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        assert!(matches!(
            write_pid(&procs, 7),
            Err(CgroupError::Write { .. })
        ));
        fs::write(&procs, "").unwrap();
        write_pid(&procs, 7).unwrap();
        assert_eq!(fs::read_to_string(&procs).unwrap(), "7");
    }
}
