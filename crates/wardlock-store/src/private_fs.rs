//! Files and directories that only their owner may read: the database, key files,
//! signing keys and exports. On Unix the mode is set at creation (never created open and
//! tightened later); elsewhere the platform's default ACLs apply.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and its missing parents as 0700; an existing directory is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Creates a new, empty 0600 file; fails if `path` exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    owner_only(OpenOptions::new().write(true).create_new(true)).open(path)
}

/// Opens `path` for writing from the start, creating it 0600 if it does not exist.
pub fn create_or_truncate(path: &Path) -> io::Result<File> {
    owner_only(OpenOptions::new().write(true).create(true).truncate(true)).open(path)
}

/// Writes `contents` to a fresh 0600 file at `path` (replacing any file there) and syncs
/// it. A replaced file is removed first, so its old, possibly looser mode is not kept.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = create_new(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
