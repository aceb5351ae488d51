//! Private files and folders: every folder authd creates itself is made mode 0700, and
//! every secret it writes (signing keys, the admin token) is a new file, mode 0600, synced
//! before it counts as written. An existing file is never overwritten.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 for the folders authd creates itself. An
/// existing `dir` (or an empty path, the current folder) is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path`, which must not exist yet, with mode 0600 and writes `contents` durably.
///
/// An existing `path` fails with [`io::ErrorKind::AlreadyExists`] and is left untouched,
/// so callers can tell "someone was first" from a real failure.
pub fn write_private_file_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_written_and_an_existing_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");

        write_private_file_new(&path, b"first").unwrap();
        let again = write_private_file_new(&path, b"second").unwrap_err();

        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
    }

    #[cfg(unix)]
    #[test]
    fn files_and_folders_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        let path = folder.join("secret");

        create_private_dir(&folder).unwrap();
        write_private_file_new(&path, b"x").unwrap();

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
    }
}
