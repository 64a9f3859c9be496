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

#[cfg(unix)]
pub fn of_stream(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
    Ok(Peer { pid, ..resolve(cred.uid(), Some(cred.gid())) })
}

/// The account `uid` with its groups, as a peer without a process (a logind session's).
#[cfg(unix)]
pub fn of_account(uid: u32) -> Peer {
    resolve(uid, None)
}

#[cfg(unix)]
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
}
