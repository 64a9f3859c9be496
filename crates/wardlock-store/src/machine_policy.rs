//! The machine policy as files: `policy.toml` (the packaged file, a conffile) and the
//! drop-ins IT puts in `policy.d/` beside it, each `*.toml` laid over it in name order. An
//! image, a preseed or Ansible sets the collector, the group and the trusted keys in a
//! drop-in, so the packaged file stays as shipped and an upgrade never asks about it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file of the machine policy, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDocument {
    pub source: String,
    pub text: String,
}

/// The machine policy's files, lowest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachinePolicy {
    pub documents: Vec<MachineDocument>,
}

/// `policy.d` beside `policy.toml`.
pub fn drop_in_dir(policy: &Path) -> PathBuf {
    policy.with_extension("d")
}

impl MachinePolicy {
    /// Reads `policy` and its drop-ins. A missing `policy` is an empty document unless
    /// `required`; a missing drop-in directory is none.
    pub fn read(policy: &Path, required: bool) -> Result<Self, String> {
        let source = policy.display().to_string();
        let text = match std::fs::read_to_string(policy) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => return Err(format!("{source}: cannot read it: {e}")),
        };
        let mut documents = vec![MachineDocument { source, text }];
        let dir = drop_in_dir(policy);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self { documents }),
            Err(e) => return Err(format!("{}: cannot read it: {e}", dir.display())),
        };
        let mut drop_ins: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                // Editors' and dpkg's leftovers (.swp, .dpkg-old) do not end in .toml.
                !name.starts_with('.') && name.ends_with(".toml")
            })
            .collect();
        drop_ins.sort();
        for path in drop_ins {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
            documents.push(MachineDocument { source: path.display().to_string(), text });
        }
        Ok(Self { documents })
    }

    /// The files' names, for the audit log and error messages.
    pub fn source_name(&self) -> String {
        self.documents.iter().map(|d| d.source.as_str()).collect::<Vec<_>>().join(" + ")
    }

    /// How the last good one is kept in the database.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The stored form; an earlier release kept the one file's text as it was.
    pub fn from_stored(stored: &str) -> Self {
        serde_json::from_str(stored).unwrap_or_else(|_| Self {
            documents: vec![MachineDocument {
                source: "last good machine policy".into(),
                text: stored.to_owned(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_ins_follow_the_file_in_name_order_and_leftovers_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "a").unwrap();
        let d = drop_in_dir(&policy);
        std::fs::create_dir(&d).unwrap();
        for (name, text) in
            [("50-site.toml", "c"), ("10-image.toml", "b"), ("50-site.toml.dpkg-old", "x"), (".60.toml", "y")]
        {
            std::fs::write(d.join(name), text).unwrap();
        }
        let read = MachinePolicy::read(&policy, true).unwrap();
        let texts: Vec<&str> = read.documents.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert!(read.source_name().ends_with("policy.d/50-site.toml"), "{}", read.source_name());
        assert_eq!(MachinePolicy::from_stored(&read.to_stored()), read);
    }

    #[test]
    fn a_missing_file_is_empty_unless_named_and_old_stored_text_is_one_document() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        assert_eq!(MachinePolicy::read(&policy, false).unwrap().documents[0].text, "");
        assert!(MachinePolicy::read(&policy, true).unwrap_err().contains("cannot read"));
        let old = MachinePolicy::from_stored("[lock]\nidle_timeout = \"5m\"\n");
        assert_eq!(old.documents.len(), 1);
        assert!(old.documents[0].text.contains("idle_timeout"));
    }
}
