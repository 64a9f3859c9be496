//! The directory as each workstation last got it, already sealed to its transport key:
//! answered again as it is until the directory changes, so a client that does not send
//! its ETag costs no opening and sealing of every TOTP seed. Bounded in bytes; the
//! snapshots built longest ago go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most this much of sealed directories is kept.
const BUDGET_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Snapshots {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_workstation: HashMap<String, Snapshot>,
    bytes: usize,
    built: u64,
}

#[derive(Debug)]
struct Snapshot {
    version: String,
    body: Arc<Vec<u8>>,
    built: u64,
}

impl Snapshots {
    /// The body made for `workstation` at `version`, if it is still kept.
    pub fn get(&self, workstation: &str, version: &str) -> Option<Arc<Vec<u8>>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by_workstation.get(workstation).filter(|s| s.version == version).map(|s| s.body.clone())
    }

    pub fn put(&self, workstation: &str, version: &str, body: Arc<Vec<u8>>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.built += 1;
        let built = inner.built;
        let size = body.len();
        if let Some(old) = inner
            .by_workstation
            .insert(workstation.to_owned(), Snapshot { version: version.to_owned(), body, built })
        {
            inner.bytes -= old.body.len();
        }
        inner.bytes += size;
        while inner.bytes > BUDGET_BYTES && inner.by_workstation.len() > 1 {
            let Some(oldest) =
                inner.by_workstation.iter().min_by_key(|(_, s)| s.built).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = inner.by_workstation.remove(&oldest) {
                inner.bytes -= gone.body.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_kept_per_workstation_and_version() {
        let s = Snapshots::default();
        s.put("a", "v1", Arc::new(vec![1]));
        assert_eq!(s.get("a", "v1").as_deref(), Some(&vec![1]));
        assert!(s.get("a", "v2").is_none(), "another directory version");
        assert!(s.get("b", "v1").is_none(), "sealed to another workstation");
        s.put("a", "v2", Arc::new(vec![2]));
        assert!(s.get("a", "v1").is_none());
    }

    #[test]
    fn the_budget_drops_the_oldest_first() {
        let s = Snapshots::default();
        let big = Arc::new(vec![0u8; BUDGET_BYTES / 2 + 1]);
        s.put("a", "v", big.clone());
        s.put("b", "v", big.clone());
        assert!(s.get("a", "v").is_none() && s.get("b", "v").is_some());
    }
}
