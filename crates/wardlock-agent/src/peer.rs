//! Who is on the other end of the socket: the kernel's word (`SO_PEERCRED`), never the
//! client's. Policy names the OS accounts and groups allowed to connect.

use wardlock_core::policy::ServicePolicy;

/// The connecting process as the kernel reports it, with names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<u32>,
    /// Account name, or `uid:N` when the account has no name.
    pub account: String,
    /// Names of the primary and supplementary groups of the account.
    pub groups: Vec<String>,
}

impl Peer {
    /// Whether policy lets this peer use the service. Root (the service's own
    /// administrator) always may; with both lists empty, every local account may.
    pub fn allowed_by(&self, policy: &ServicePolicy) -> bool {
        if self.uid == 0 || (policy.allowed_users.is_empty() && policy.allowed_groups.is_empty()) {
            return true;
        }
        policy.allowed_users.contains(&self.account)
            || policy.allowed_groups.iter().any(|g| self.groups.contains(g))
    }
}

/// The executable process `pid` runs, as the kernel says (`/proc/PID/exe`). Reading it
/// for another account's process needs `CAP_SYS_PTRACE` (wardlockd.service grants it).
pub fn executable_of(pid: u32) -> Result<std::path::PathBuf, String> {
    std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("cannot read /proc/{pid}/exe: {e}"))
}

/// A file as the kernel knows it: device and inode (a path can be bind-mounted over in
/// another mount namespace; the file a process runs cannot be), and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
}

impl std::fmt::Display for FileIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {} inode {}", self.dev, self.ino)
    }
}

/// Whether process `pid` has ended: gone, or a zombie its parent has not reaped yet (its
/// `/proc` entry stays, its executable and memory do not).
pub fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X" | "x")),
        Err(_) => true,
    }
}

/// The file process `pid` runs, whatever path its mount namespace shows for it
/// (`stat` through `/proc/PID/exe` reaches the file itself).
pub fn running_file(pid: u32) -> Result<FileIdentity, String> {
    identity(std::path::Path::new(&format!("/proc/{pid}/exe")))
}

/// The file at `path`, as this service sees it.
pub fn identity(path: &std::path::Path) -> Result<FileIdentity, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    Ok(FileIdentity { dev: meta.dev(), ino: meta.ino(), uid: meta.uid() })
}

/// Why process `pid` lives apart from the desktop sessions, if it does: in another user
/// namespace than the service's (an unprivileged account makes a mount namespace only
/// inside a user namespace of its own), or in another mount namespace than PID 1's where
/// that can be read (the service's own is private: `ProtectSystem=`, `PrivateTmp=`).
pub fn foreign_namespaces(pid: u32) -> Result<Option<String>, String> {
    let ns = |who: &str, kind: &str| {
        std::fs::read_link(format!("/proc/{who}/ns/{kind}")).map(|l| l.to_string_lossy().into_owned())
    };
    let theirs =
        |kind| ns(&pid.to_string(), kind).map_err(|e| format!("cannot read /proc/{pid}/ns/{kind}: {e}"));
    let (their_user, their_mnt) = (theirs("user")?, theirs("mnt")?);
    let our_user =
        ns("self", "user").map_err(|e| format!("cannot read this service's user namespace: {e}"))?;
    if their_user != our_user {
        return Ok(Some(format!("it runs in another user namespace ({their_user}, not {our_user})")));
    }
    if let Ok(init_mnt) = ns("1", "mnt") {
        if their_mnt != init_mnt {
            return Ok(Some(format!("it runs in another mount namespace ({their_mnt}, not {init_mnt})")));
        }
    }
    Ok(None)
}

/// Code mapped into process `pid` that nobody but root (or whoever installed `own`, the
/// guard executable itself) could have written: a library preloaded, a GTK, GIO or
/// input-method module loaded from the user's files, whatever put it there and whatever
/// the environment says now. Answers the first foreign file found.
pub fn foreign_code(pid: u32, own: FileIdentity) -> Result<Option<String>, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("cannot read /proc/{pid}/maps: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let (Some(_), Some(perms), Some(_), Some(_), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = fields.next().unwrap_or("").trim_start();
        if !perms.contains('x') || inode == "0" || !path.starts_with('/') || !seen.insert(path.to_owned()) {
            continue;
        }
        if let Some(why) = foreign_file(path, inode, own) {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

/// Why the mapped file at `path` (inode `inode` as the mapping says) is not trusted code.
fn foreign_file(path: &str, inode: &str, own: FileIdentity) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root_only = |meta: &std::fs::Metadata| meta.uid() == 0 && meta.mode() & 0o022 == 0;
    if path.starts_with("/memfd:") {
        return Some(format!("it runs code from memory no file holds ({path})"));
    }
    if let Some(gone) = path.strip_suffix(" (deleted)") {
        // Replaced since it was mapped (a package upgrade): trusted if only root could
        // have put a file where it was.
        let dir = std::path::Path::new(gone).parent()?;
        return match std::fs::metadata(dir) {
            Ok(meta) if root_only(&meta) => None,
            _ => Some(format!("it runs code from {path}, in a folder others than root may write")),
        };
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("it runs code from {path}, which this service cannot see ({e})")),
    };
    if meta.ino().to_string() != inode {
        return Some(format!("it runs code from a file that is not {path} as this service sees it"));
    }
    if (meta.dev(), meta.ino()) == (own.dev, own.ino) || root_only(&meta) {
        return None;
    }
    Some(format!("it runs code from {path}, which others than root may write"))
}

/// Variables in process `pid`'s environment that make the dynamic loader run other code
/// in it (`LD_PRELOAD`, `LD_AUDIT`): the right executable with them is not the guard.
pub fn code_injection_vars(pid: u32) -> Result<Vec<String>, String> {
    const INJECTING: &[&[u8]] = &[b"LD_PRELOAD=", b"LD_AUDIT="];
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("cannot read /proc/{pid}/environ: {e}"))?;
    Ok(environ
        .split(|b| *b == 0)
        .filter(|var| INJECTING.iter().any(|p| var.starts_with(p) && var.len() > p.len()))
        .filter_map(|var| std::str::from_utf8(var).ok()?.split('=').next().map(str::to_owned))
        .collect())
}

/// The peer of `stream`. Its names are looked up on the blocking pool: on a machine
/// joined to a directory (SSSD, LDAP) each lookup may be a network round trip.
pub async fn of_stream(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
    let (uid, gid) = (cred.uid(), cred.gid());
    let resolved =
        tokio::task::spawn_blocking(move || resolve(uid, Some(gid))).await.map_err(std::io::Error::other)?;
    Ok(Peer { pid, ..resolved })
}

/// The account `uid` with its groups, as a peer without a process (a logind session's).
/// Blocks (NSS).
pub fn of_account(uid: u32) -> Peer {
    resolve(uid, None)
}

fn resolve(uid: u32, gid: Option<u32>) -> Peer {
    use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let account = user.as_ref().map_or_else(|| format!("uid:{uid}"), |u| u.name.clone());
    let primary = gid.map(Gid::from_raw).or_else(|| user.as_ref().map(|u| u.gid));
    let mut gids: Vec<Gid> = primary.into_iter().collect();
    if let Some(user) = &user {
        if let Ok(name) = std::ffi::CString::new(user.name.clone()) {
            gids = getgrouplist(&name, user.gid).unwrap_or(gids);
        }
    }
    let groups =
        gids.into_iter().filter_map(|gid| Group::from_gid(gid).ok().flatten().map(|g| g.name)).collect();
    Peer { uid, pid: None, account, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, account: &str, groups: &[&str]) -> Peer {
        Peer {
            uid,
            pid: None,
            account: account.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn policy_lists_decide_and_root_always_passes() {
        let open = ServicePolicy::default();
        assert!(peer(1000, "ward4", &[]).allowed_by(&open));

        let strict = ServicePolicy {
            allowed_users: vec!["ward4".into()],
            allowed_groups: vec!["ward-staff".into()],
            ..ServicePolicy::default()
        };
        assert!(peer(1000, "ward4", &[]).allowed_by(&strict));
        assert!(peer(1001, "ward5", &["users", "ward-staff"]).allowed_by(&strict));
        assert!(!peer(1002, "visitor", &["users"]).allowed_by(&strict));
        assert!(peer(0, "root", &[]).allowed_by(&strict));
    }

    #[test]
    fn a_running_process_has_not_exited_a_zombie_and_a_reaped_one_have() {
        assert!(!has_exited(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it ends. Its state is polled (no event says when).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !has_exited(pid) {
            assert!(std::time::Instant::now() < deadline, "a finished child never showed as exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "reaped too early to be a zombie");
        child.wait().unwrap();
        assert!(has_exited(pid));
    }
}
