//! Who a container runs as: the CRI security context or the image's `User`, with names
//! resolved from the rootfs's own /etc/passwd and /etc/group.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use limpet_protos::cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use super::SpecError;

/// The process identity for the spec: uid, gid and every supplementary gid (primary first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The passwd name of `uid`, when the rootfs has one.
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves the user as containerd's CRI does: `run_as_user`/`run_as_username` (with
/// `run_as_group`) win over the image's `User`; an unset user is root. The user's groups in
/// /etc/group are added unless the supplemental groups policy is Strict; the CRI
/// `supplemental_groups` always are.
pub fn resolve_user(
    rootfs: &Path,
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    resolve_user_in(Some(rootfs), sc, image_user)
}

/// [`resolve_user`] for a rootfs that may not be there (the built-in pause has none): then
/// only numeric users and groups resolve.
pub fn resolve_user_in(
    rootfs: Option<&Path>,
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let read = |name| match rootfs {
        Some(r) => read_rootfs_file(r, name).map(Option::unwrap_or_default),
        None => Ok(String::new()),
    };
    let passwd = parse_passwd(&read("passwd")?);
    let groups = parse_group(&read("group")?);

    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);
    let run_as_username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");

    let (user_part, group_part) = if let Some(uid) = run_as_user {
        (
            Some(id_string(uid, "run_as_user")?),
            run_as_group.map(|g| g.to_string()),
        )
    } else if !run_as_username.is_empty() {
        (
            Some(run_as_username.to_string()),
            run_as_group.map(|g| g.to_string()),
        )
    } else if let Some(gid) = run_as_group {
        return Err(SpecError::InvalidUser {
            user: format!(":{gid}"),
            reason: "run_as_group is set without run_as_user or run_as_username".into(),
        });
    } else {
        match image_user.filter(|u| !u.is_empty()) {
            Some(u) => match u.split_once(':') {
                Some((user, group)) => (Some(user.to_string()), Some(group.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        }
    };

    let (uid, mut gid, username) = match user_part.as_deref() {
        None => lookup_uid(&passwd, 0),
        Some(u) => match u.parse::<u32>() {
            Ok(uid) => lookup_uid(&passwd, uid),
            Err(_) if u.starts_with('-') || u.is_empty() => {
                return Err(SpecError::InvalidUser {
                    user: u.to_string(),
                    reason: "not a uid or a name".into(),
                })
            }
            Err(_) => {
                let entry = passwd
                    .iter()
                    .find(|p| p.name == u)
                    .ok_or_else(|| SpecError::UserNotFound(u.to_string()))?;
                (entry.uid, entry.gid, Some(entry.name.clone()))
            }
        },
    };
    if let Some(g) = group_part.as_deref() {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| SpecError::GroupNotFound(g.to_string()))?
                    .gid
            }
        };
    }

    let mut additional_gids = vec![gid];
    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    if let Some(name) = username.as_ref().filter(|_| !strict) {
        for g in groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name))
        {
            push_unique(&mut additional_gids, g.gid);
        }
    }
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        let g = u32::try_from(*g).map_err(|_| SpecError::InvalidUser {
            user: g.to_string(),
            reason: "supplemental group out of range".into(),
        })?;
        push_unique(&mut additional_gids, g);
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        username,
    })
}

fn id_string(id: i64, what: &str) -> Result<String, SpecError> {
    u32::try_from(id)
        .map(|v| v.to_string())
        .map_err(|_| SpecError::InvalidUser {
            user: id.to_string(),
            reason: format!("{what} out of range"),
        })
}

/// A numeric uid need not exist in passwd; then its gid is 0, as with containerd.
fn lookup_uid(passwd: &[PasswdEntry], uid: u32) -> (u32, u32, Option<String>) {
    match passwd.iter().find(|p| p.uid == uid) {
        Some(p) => (uid, p.gid, Some(p.name.clone())),
        None => (uid, 0, None),
    }
}

fn push_unique(v: &mut Vec<u32>, x: u32) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// Reads `<rootfs>/etc/<name>`, refusing a symlinked /etc or file (they could point at the
/// host's files) and anything but a regular file. A missing file reads as `None`.
fn read_rootfs_file(rootfs: &Path, name: &str) -> Result<Option<String>, SpecError> {
    let etc = rootfs.join("etc");
    match std::fs::symlink_metadata(&etc) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(SpecError::UnsafePath {
                path: etc,
                reason: "/etc in the rootfs is a symlink",
            })
        }
        Ok(m) if !m.is_dir() => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpecError::Io { path: etc, source }),
    }
    let path = etc.join(name);
    let io = |source| SpecError::Io {
        path: path.clone(),
        source,
    };
    let mut file: File = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SpecError::UnsafePath {
                path,
                reason: "is a symlink",
            })
        }
        Err(e) => return Err(io(e)),
    };
    if !file.metadata().map_err(io)?.is_file() {
        return Err(SpecError::UnsafePath {
            path,
            reason: "not a regular file",
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(Some(text))
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use limpet_protos::cri::v1::Int64Value;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnogrp:x:1001:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nmore:x:3000:other\n",
        )
        .unwrap();
        dir
    }

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    fn user(uid: u32, gid: u32, gids: &[u32], name: Option<&str>) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
            username: name.map(String::from),
        }
    }

    #[test]
    fn no_user_is_root() {
        let r = rootfs();
        assert_eq!(
            resolve_user(r.path(), None, None).unwrap(),
            user(0, 0, &[0], Some("root"))
        );
    }

    #[test]
    fn image_user_forms() {
        let r = rootfs();
        let p = r.path();
        assert_eq!(
            resolve_user(p, None, Some("app")).unwrap(),
            user(1000, 1000, &[1000, 2000], Some("app"))
        );
        assert_eq!(
            resolve_user(p, None, Some("1000")).unwrap(),
            user(1000, 1000, &[1000, 2000], Some("app"))
        );
        assert_eq!(
            resolve_user(p, None, Some("app:more")).unwrap(),
            user(1000, 3000, &[3000, 2000], Some("app"))
        );
        assert_eq!(
            resolve_user(p, None, Some("4242:77")).unwrap(),
            user(4242, 77, &[77], None)
        );
        // an unknown numeric uid runs with gid 0
        assert_eq!(
            resolve_user(p, None, Some("4242")).unwrap(),
            user(4242, 0, &[0], None)
        );
        assert!(matches!(
            resolve_user(p, None, Some("ghost")),
            Err(SpecError::UserNotFound(u)) if u == "ghost"
        ));
        assert!(matches!(
            resolve_user(p, None, Some("app:ghosts")),
            Err(SpecError::GroupNotFound(g)) if g == "ghosts"
        ));
    }

    #[test]
    fn security_context_wins_over_image_user() {
        let r = rootfs();
        let p = r.path();
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1001 });
        assert_eq!(
            resolve_user(p, Some(&s), Some("app")).unwrap(),
            user(1001, 1001, &[1001], Some("nogrp"))
        );
        s.run_as_group = Some(Int64Value { value: 5 });
        s.supplemental_groups = vec![9, 5, 10];
        assert_eq!(
            resolve_user(p, Some(&s), Some("app")).unwrap(),
            user(1001, 5, &[5, 9, 10], Some("nogrp"))
        );

        let mut s = sc();
        s.run_as_username = "app".into();
        assert_eq!(
            resolve_user(p, Some(&s), None).unwrap(),
            user(1000, 1000, &[1000, 2000], Some("app"))
        );

        let mut s = sc();
        s.run_as_group = Some(Int64Value { value: 5 });
        assert!(matches!(
            resolve_user(p, Some(&s), Some("app")),
            Err(SpecError::InvalidUser { .. })
        ));
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: -1 });
        assert!(matches!(
            resolve_user(p, Some(&s), None),
            Err(SpecError::InvalidUser { .. })
        ));
    }

    #[test]
    fn strict_policy_skips_etc_group() {
        let r = rootfs();
        let mut s = sc();
        s.run_as_username = "app".into();
        s.supplemental_groups = vec![7];
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(
            resolve_user(r.path(), Some(&s), None).unwrap(),
            user(1000, 1000, &[1000, 7], Some("app"))
        );
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Merge as i32;
        assert_eq!(
            resolve_user(r.path(), Some(&s), None).unwrap(),
            user(1000, 1000, &[1000, 2000, 7], Some("app"))
        );
    }

    #[test]
    fn no_rootfs_resolves_numeric_ids() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 65535 });
        s.run_as_group = Some(Int64Value { value: 65534 });
        assert_eq!(
            resolve_user_in(None, Some(&s), None).unwrap(),
            user(65535, 65534, &[65534], None)
        );
        assert_eq!(
            resolve_user_in(None, None, None).unwrap(),
            user(0, 0, &[0], None)
        );
        assert!(resolve_user_in(None, None, Some("app")).is_err());
    }

    #[test]
    fn symlinked_passwd_is_refused() {
        let r = rootfs();
        let passwd = r.path().join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &passwd).unwrap();
        assert!(matches!(
            resolve_user(r.path(), None, Some("app")),
            Err(SpecError::UnsafePath { .. })
        ));

        let r = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", r.path().join("etc")).unwrap();
        assert!(matches!(
            resolve_user(r.path(), None, None),
            Err(SpecError::UnsafePath { .. })
        ));
    }

    #[test]
    fn missing_passwd_allows_numeric_users_only() {
        let r = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_user(r.path(), None, Some("7:8")).unwrap(),
            user(7, 8, &[8], None)
        );
        assert!(resolve_user(r.path(), None, Some("app")).is_err());
    }
}
