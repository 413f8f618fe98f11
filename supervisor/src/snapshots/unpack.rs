//! Unpacks one layer tar into an empty directory in overlayfs form: `.wh.NAME` becomes a 0/0
//! character device, `.wh..wh..opq` an opaque directory (`trusted.overlay.opaque=y`).
//!
//! Every path is resolved beneath the layer directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so no entry can be written through a symlink, outside the layer,
//! or over `..`. Hardlinks must point at a file of the same layer; device nodes are refused.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
    XattrFlags,
};

/// What an unpacked layer holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Bytes of file content.
    pub size: u64,
    /// Entries created.
    pub inodes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer is not a valid tar archive: {0}")]
    Tar(io::Error),
    #[error("layer entry {path:?}: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: io::Error,
    },
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// A directory's metadata, applied after its last child is written.
struct DirMeta {
    path: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Unpacks `archive` into `dest`, which must exist and be empty. On error `dest` holds a
/// partial tree: the caller discards it.
pub fn unpack<R: Read>(archive: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = rfs::open(
        dest,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(".", "open layer directory")(e.into()))?;
    let mut u = Unpacker {
        root,
        stats: UnpackStats::default(),
        dirs: Vec::new(),
    };
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries().map_err(UnpackError::Tar)? {
        let entry = entry.map_err(UnpackError::Tar)?;
        u.entry(entry)?;
    }
    u.finish_dirs()?;
    Ok(u.stats)
}

struct Unpacker {
    root: OwnedFd,
    stats: UnpackStats,
    dirs: Vec<DirMeta>,
}

fn io_err<'a>(path: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        path: path.into(),
        op,
        source,
    }
}

/// Splits an entry path into clean components: no `..`, no empty or `.` parts.
pub fn clean_path(raw: &[u8]) -> Result<Vec<String>, &'static str> {
    let s = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path contains `..`"),
            p if p.contains('\0') => return Err("path contains NUL"),
            p => parts.push(p.to_string()),
        }
    }
    Ok(parts)
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_path = |reason| UnpackError::Unsafe {
            path: shown.clone(),
            reason,
        };
        let parts = clean_path(&raw).map_err(unsafe_path)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let xattrs = xattrs(&mut entry).map_err(UnpackError::Tar)?;
        let meta = Meta {
            mode: header.mode().map_err(UnpackError::Tar)? & 0o7777,
            uid: header.uid().map_err(UnpackError::Tar)? as u32,
            gid: header.gid().map_err(UnpackError::Tar)? as u32,
            mtime: header.mtime().unwrap_or(0),
        };

        let Some((name, dir_parts)) = parts.split_last() else {
            // "./": the layer root itself
            if kind.is_dir() {
                self.dirs.push(DirMeta {
                    path: String::new(),
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime: meta.mtime,
                    xattrs,
                });
            }
            return Ok(());
        };
        let parent_path = dir_parts.join("/");
        let parent = self.open_dir(&parent_path, &shown)?;

        if name == OPAQUE {
            // xattrs need a real descriptor, not the O_PATH one
            let dir = rfs::openat(
                &parent,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(&shown, "open directory")(e.into()))?;
            return rfs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| io_err(&shown, "mark directory opaque")(e.into()));
        }
        if name.starts_with(".wh..wh.") {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if hidden.is_empty() {
                return Err(unsafe_path("empty whiteout name"));
            }
            self.replace(&parent, hidden, &shown, false)?;
            rfs::mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rfs::makedev(0, 0),
            )
            .map_err(|e| io_err(&shown, "create whiteout")(e.into()))?;
            self.stats.inodes += 1;
            return Ok(());
        }

        match kind {
            tar::EntryType::Directory => {
                self.replace(&parent, name, &shown, true)?;
                match rfs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o700)) {
                    Err(rustix::io::Errno::EXIST) => {}
                    r => r.map_err(|e| io_err(&shown, "create directory")(e.into()))?,
                }
                let path = if parent_path.is_empty() {
                    name.clone()
                } else {
                    format!("{parent_path}/{name}")
                };
                self.dirs.push(DirMeta {
                    path,
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime: meta.mtime,
                    xattrs,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.replace(&parent, name, &shown, false)?;
                let fd = rfs::openat(
                    &parent,
                    name.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_err(&shown, "create file")(e.into()))?;
                let mut file = std::fs::File::from(fd);
                let n = io::copy(&mut entry, &mut file).map_err(|e| classify_copy(e, &shown))?;
                self.stats.size += n;
                apply_fd(file.as_fd(), &meta, &xattrs, &shown)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_path("symlink without target"))?;
                let target = std::str::from_utf8(&target)
                    .map_err(|_| unsafe_path("symlink target is not UTF-8"))?
                    .to_string();
                self.replace(&parent, name, &shown, false)?;
                rfs::symlinkat(target.as_str(), &parent, name.as_str())
                    .map_err(|e| io_err(&shown, "create symlink")(e.into()))?;
                rfs::chownat(
                    &parent,
                    name.as_str(),
                    Some(uid(meta.uid)),
                    Some(gid(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err(&shown, "chown symlink")(e.into()))?;
                rfs::utimensat(
                    &parent,
                    name.as_str(),
                    &times(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err(&shown, "set symlink times")(e.into()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_path("hardlink without target"))?;
                let target_parts = clean_path(&target)
                    .map_err(|_| unsafe_path("hardlink target leaves the layer"))?;
                let Some((tname, tdir)) = target_parts.split_last() else {
                    return Err(unsafe_path("hardlink to the layer root"));
                };
                let tparent = self
                    .open_existing_dir(&tdir.join("/"))
                    .map_err(|_| unsafe_path("hardlink target is not in this layer"))?;
                match rfs::statat(&tparent, tname.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(unsafe_path("hardlink to a directory"))
                    }
                    Ok(_) => {}
                    Err(_) => return Err(unsafe_path("hardlink target is not in this layer")),
                }
                if tdir == dir_parts && tname == name {
                    return Ok(()); // a link to itself: nothing to do
                }
                self.replace(&parent, name, &shown, false)?;
                rfs::linkat(
                    &tparent,
                    tname.as_str(),
                    &parent,
                    name.as_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| io_err(&shown, "create hardlink")(e.into()))?;
            }
            tar::EntryType::Fifo => {
                self.replace(&parent, name, &shown, false)?;
                rfs::mknodat(
                    &parent,
                    name.as_str(),
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| io_err(&shown, "create fifo")(e.into()))?;
                // just created, so not a symlink: the path calls cannot be redirected
                rfs::chownat(
                    &parent,
                    name.as_str(),
                    Some(uid(meta.uid)),
                    Some(gid(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .and_then(|_| {
                    rfs::chmodat(
                        &parent,
                        name.as_str(),
                        Mode::from_raw_mode(meta.mode),
                        AtFlags::empty(),
                    )
                })
                .and_then(|_| {
                    rfs::utimensat(
                        &parent,
                        name.as_str(),
                        &times(meta.mtime),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                })
                .map_err(|e| io_err(&shown, "set fifo metadata")(e.into()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(unsafe_path("device nodes are not allowed in image layers"));
            }
            _ => return Ok(()), // long-name and other bookkeeping entries carry no file
        }
        self.stats.inodes += 1;
        Ok(())
    }

    /// Opens directory `path` (relative to the layer root), creating missing parents.
    fn open_dir(&self, path: &str, shown: &str) -> Result<OwnedFd, UnpackError> {
        match self.open_existing_dir(path) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(resolve_err(e, shown)),
        }
        let mut cur = rfs::openat(
            &self.root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(shown, "open layer root")(e.into()))?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            match rfs::mkdirat(&cur, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io_err(shown, "create parent directory")(e.into())),
            }
            cur = rfs::openat2(
                &cur,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(|e| resolve_err(e, shown))?;
        }
        Ok(cur)
    }

    fn open_existing_dir(&self, path: &str) -> Result<OwnedFd, rustix::io::Errno> {
        let path = if path.is_empty() { "." } else { path };
        rfs::openat2(
            &self.root,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    /// Makes room for a new entry `name`: an earlier entry of the same path is replaced,
    /// except that a directory stays when a directory comes again.
    fn replace(
        &self,
        parent: &OwnedFd,
        name: &str,
        shown: &str,
        keep_dir: bool,
    ) -> Result<(), UnpackError> {
        let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_err(shown, "stat")(e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(());
            }
            let dir = rfs::openat2(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(|e| io_err(shown, "open directory to replace")(e.into()))?;
            remove_tree_at(&dir)
                .map_err(|e| io_err(shown, "remove replaced directory")(e.into()))?;
            rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)
        } else {
            rfs::unlinkat(parent, name, AtFlags::empty())
        }
        .map_err(|e| io_err(shown, "remove replaced entry")(e.into()))
    }

    /// Applies directory metadata once all children exist (creating a child changes the
    /// directory's mtime, and a read-only mode must not be set before its children).
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        for d in std::mem::take(&mut self.dirs).into_iter().rev() {
            let path = if d.path.is_empty() {
                "."
            } else {
                d.path.as_str()
            };
            let fd = match rfs::openat2(
                &self.root,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                Ok(fd) => fd,
                // a later entry replaced the directory: its metadata went with it
                Err(
                    rustix::io::Errno::NOTDIR | rustix::io::Errno::NOENT | rustix::io::Errno::LOOP,
                ) => continue,
                Err(e) => return Err(io_err(&d.path, "open directory")(e.into())),
            };
            let meta = Meta {
                mode: d.mode,
                uid: d.uid,
                gid: d.gid,
                mtime: d.mtime,
            };
            apply_fd(fd.as_fd(), &meta, &d.xattrs, &d.path)?;
        }
        Ok(())
    }
}

/// Empties a directory without following symlinks.
fn remove_tree_at(dir: &OwnedFd) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    let mut it = rfs::Dir::read_from(dir)?;
    while let Some(ent) = it.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), ent.file_type()));
        }
    }
    for (name, ft) in names {
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name);
        if ft == FileType::Directory {
            let sub = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            remove_tree_at(&sub)?;
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            rfs::unlinkat(dir, name, AtFlags::empty())?;
        }
    }
    Ok(())
}

fn resolve_err(e: rustix::io::Errno, shown: &str) -> UnpackError {
    let reason = match e {
        rustix::io::Errno::LOOP => "path passes through a symlink",
        rustix::io::Errno::XDEV => "path leaves the layer",
        rustix::io::Errno::NOTDIR => "a parent of the path is not a directory",
        _ => return io_err(shown, "open parent directory")(e.into()),
    };
    UnpackError::Unsafe {
        path: shown.into(),
        reason,
    }
}

/// A read error while copying file data is the archive's fault; a write error is ours.
fn classify_copy(e: io::Error, shown: &str) -> UnpackError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            UnpackError::Tar(e)
        }
        _ if e.get_ref().is_some() => UnpackError::Tar(e),
        _ => io_err(shown, "write file")(e),
    }
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

fn uid(u: u32) -> Uid {
    Uid::from_raw(u)
}

fn gid(g: u32) -> Gid {
    Gid::from_raw(g)
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner first (chown clears set-id bits), then mode, xattrs and times.
fn apply_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    meta: &Meta,
    xattrs: &[(String, Vec<u8>)],
    shown: &str,
) -> Result<(), UnpackError> {
    rfs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid)))
        .map_err(|e| io_err(shown, "chown")(e.into()))?;
    rfs::fchmod(fd, Mode::from_raw_mode(meta.mode))
        .map_err(|e| io_err(shown, "chmod")(e.into()))?;
    for (name, value) in xattrs {
        match rfs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(io_err(shown, "set xattr")(e.into())),
        }
    }
    rfs::futimens(fd, &times(meta.mtime)).map_err(|e| io_err(shown, "set times")(e.into()))
}

/// Extended attributes from PAX headers. overlayfs' own `trusted.overlay.*` are dropped: an
/// image must not steer the overlay (redirects, metacopy) from inside a layer.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if !name.starts_with("trusted.overlay.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A tar entry with a raw name (tar::Builder refuses `..`, which tests need).
    fn entry(
        out: &mut Vec<u8>,
        name: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) {
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[..100].fill(0);
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_600_000_000);
        if let Some(l) = link {
            h.as_mut_bytes()[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn unpack_bytes(tar: &[u8]) -> (tempfile::TempDir, Result<UnpackStats, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack(tar, dir.path());
        (dir, r)
    }

    #[test]
    fn unpacks_files_links_and_metadata() {
        if !is_root() {
            eprintln!("SKIP unpacks_files_links_and_metadata: needs root (chown)");
            return;
        }
        let mut t = Vec::new();
        entry(&mut t, "./", tar::EntryType::Directory, b"", None, 0o755);
        entry(&mut t, "bin/", tar::EntryType::Directory, b"", None, 0o750);
        entry(
            &mut t,
            "bin/busybox",
            tar::EntryType::Regular,
            b"#!binary",
            None,
            0o4755,
        );
        entry(
            &mut t,
            "bin/sh",
            tar::EntryType::Symlink,
            b"",
            Some("/bin/busybox"),
            0o777,
        );
        entry(
            &mut t,
            "bin/ls",
            tar::EntryType::Link,
            b"",
            Some("bin/busybox"),
            0o755,
        );
        entry(
            &mut t,
            "/etc/passwd",
            tar::EntryType::Regular,
            b"root:x:0:0\n",
            None,
            0o644,
        );
        entry(&mut t, "run/fifo", tar::EntryType::Fifo, b"", None, 0o600);
        let (dir, r) = unpack_bytes(&finish(t));
        let stats = r.unwrap();
        let root = dir.path();
        let bb = std::fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!(bb.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(
            (bb.uid(), bb.gid(), bb.mtime()),
            (1000, 1001, 1_600_000_000)
        );
        assert_eq!(bb.nlink(), 2);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            std::fs::read(root.join("etc/passwd")).unwrap(),
            b"root:x:0:0\n"
        );
        let bin = std::fs::metadata(root.join("bin")).unwrap();
        assert_eq!(
            (bin.permissions().mode() & 0o7777, bin.mtime()),
            (0o750, 1_600_000_000)
        );
        assert!(std::fs::symlink_metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(stats.size, 8 + 11);
    }

    #[test]
    fn whiteouts_become_overlay_form() {
        if !is_root() {
            eprintln!("SKIP whiteouts_become_overlay_form: needs root (mknod, trusted xattrs)");
            return;
        }
        let mut t = Vec::new();
        entry(
            &mut t,
            "etc/.wh.hosts",
            tar::EntryType::Regular,
            b"",
            None,
            0o644,
        );
        entry(
            &mut t,
            "var/cache/.wh..wh..opq",
            tar::EntryType::Regular,
            b"",
            None,
            0o644,
        );
        entry(
            &mut t,
            "var/cache/new",
            tar::EntryType::Regular,
            b"n",
            None,
            0o644,
        );
        entry(
            &mut t,
            ".wh..wh.plnk",
            tar::EntryType::Directory,
            b"",
            None,
            0o700,
        );
        let (dir, r) = unpack_bytes(&finish(t));
        r.unwrap();
        let wh = std::fs::symlink_metadata(dir.path().join("etc/hosts")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        let mut buf = [0u8; 4];
        let n = rustix::fs::lgetxattr(
            dir.path().join("var/cache"),
            "trusted.overlay.opaque",
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], b"y");
        assert!(!dir.path().join(".wh..wh.plnk").exists());
    }

    #[test]
    fn refuses_escapes_devices_and_bad_links() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().display().to_string();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", {
                let mut t = Vec::new();
                entry(
                    &mut t,
                    "a/../../escape",
                    tar::EntryType::Regular,
                    b"x",
                    None,
                    0o644,
                );
                t
            }),
            ("through symlink", {
                let mut t = Vec::new();
                entry(
                    &mut t,
                    "lnk",
                    tar::EntryType::Symlink,
                    b"",
                    Some(&target),
                    0o777,
                );
                entry(
                    &mut t,
                    "lnk/planted",
                    tar::EntryType::Regular,
                    b"x",
                    None,
                    0o644,
                );
                t
            }),
            ("relative symlink up", {
                let mut t = Vec::new();
                entry(
                    &mut t,
                    "up",
                    tar::EntryType::Symlink,
                    b"",
                    Some("../../../.."),
                    0o777,
                );
                entry(
                    &mut t,
                    "up/tmp/planted",
                    tar::EntryType::Regular,
                    b"x",
                    None,
                    0o644,
                );
                t
            }),
            ("hardlink outside", {
                let mut t = Vec::new();
                entry(
                    &mut t,
                    "h",
                    tar::EntryType::Link,
                    b"",
                    Some("../../etc/passwd"),
                    0o644,
                );
                t
            }),
            ("hardlink to missing", {
                let mut t = Vec::new();
                entry(
                    &mut t,
                    "h",
                    tar::EntryType::Link,
                    b"",
                    Some("etc/passwd"),
                    0o644,
                );
                t
            }),
            ("hardlink via symlink", {
                let mut t = Vec::new();
                entry(
                    &mut t,
                    "etc",
                    tar::EntryType::Symlink,
                    b"",
                    Some("/etc"),
                    0o777,
                );
                entry(
                    &mut t,
                    "h",
                    tar::EntryType::Link,
                    b"",
                    Some("etc/passwd"),
                    0o644,
                );
                t
            }),
            ("char device", {
                let mut t = Vec::new();
                entry(&mut t, "dev/mem", tar::EntryType::Char, b"", None, 0o600);
                t
            }),
            ("block device", {
                let mut t = Vec::new();
                entry(&mut t, "dev/sda", tar::EntryType::Block, b"", None, 0o600);
                t
            }),
        ];
        for (what, t) in cases {
            let (dir, r) = unpack_bytes(&finish(t));
            let err = r.expect_err(what);
            assert!(matches!(err, UnpackError::Unsafe { .. }), "{what}: {err}");
            assert_eq!(
                std::fs::read_dir(outside.path()).unwrap().count(),
                0,
                "{what} wrote outside"
            );
            drop(dir);
        }
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let mut t = Vec::new();
        entry(
            &mut t,
            "big",
            tar::EntryType::Regular,
            &[7u8; 4096],
            None,
            0o644,
        );
        t.truncate(1500);
        let (_dir, r) = unpack_bytes(&t);
        assert!(matches!(r, Err(UnpackError::Tar(_))), "{r:?}");
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let mut t = Vec::new();
        entry(&mut t, "x/", tar::EntryType::Directory, b"", None, 0o755);
        entry(
            &mut t,
            "x/child",
            tar::EntryType::Regular,
            b"c",
            None,
            0o644,
        );
        entry(
            &mut t,
            "x",
            tar::EntryType::Regular,
            b"file now",
            None,
            0o644,
        );
        entry(&mut t, "y", tar::EntryType::Regular, b"old", None, 0o644);
        entry(&mut t, "y", tar::EntryType::Symlink, b"", Some("x"), 0o777);
        let (dir, r) = unpack_bytes(&finish(t));
        if !is_root() {
            eprintln!("SKIP later_entries_replace_earlier_ones: needs root (chown)");
            return;
        }
        r.unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"file now");
        assert_eq!(
            std::fs::read_link(dir.path().join("y")).unwrap(),
            Path::new("x")
        );
    }

    #[test]
    fn clean_path_rules() {
        assert_eq!(clean_path(b"./a//b/./c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(clean_path(b"/abs").unwrap(), vec!["abs"]);
        assert!(clean_path(b"a/../b").is_err());
        assert!(clean_path(b"..").is_err());
        assert!(clean_path(b"./").unwrap().is_empty());
    }
}
