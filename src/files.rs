//! Private files and folders: every folder authd creates itself is made mode 0700, and
//! every secret it writes (signing keys, the admin token) is a new file, mode 0600, synced
//! before it counts as written. An existing file is never overwritten. It also owns the
//! checks on files it did not write (API.md "Keys", rev 4): secret files only their owner
//! may touch, state folders nobody else may write to, no symlink out of the keys folder,
//! token files of at least 32 bytes.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};

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

/// Why a secret file or a private folder may not be used. Names the path, never contents.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error(
        "{} is readable or writable by group or others (mode {mode:04o}): \
         restrict it with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    SharedFile { path: PathBuf, mode: u32 },
    #[error(
        "{} is writable by group or others (mode {mode:04o}): \
         restrict it with `chmod go-w {}`",
        path.display(),
        path.display()
    )]
    SharedDir { path: PathBuf, mode: u32 },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is not a folder", path.display())]
    NotADir { path: PathBuf },
    #[error(
        "{} is a symbolic link pointing outside its folder (to {}); \
         put the file itself in the folder",
        path.display(),
        target.display()
    )]
    SymlinkOut { path: PathBuf, target: PathBuf },
    #[error(
        "{} holds a token of {len} bytes; at least {min} are needed \
         (surrounding whitespace does not count)",
        path.display()
    )]
    ShortToken {
        path: PathBuf,
        len: usize,
        min: usize,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl FileProblem {
    /// The file or folder the problem is about.
    pub fn path(&self) -> &Path {
        match self {
            FileProblem::SharedFile { path, .. }
            | FileProblem::SharedDir { path, .. }
            | FileProblem::NotAFile { path }
            | FileProblem::NotADir { path }
            | FileProblem::SymlinkOut { path, .. }
            | FileProblem::ShortToken { path, .. }
            | FileProblem::Io { path, .. } => path,
        }
    }
}

/// The shortest token accepted from a token file (admin, feed): 256 bits.
pub const MIN_TOKEN_BYTES: usize = 32;

/// Checks a secret file (signing key, admin or feed token, MFA key, etcd password): a
/// regular file that neither group nor others may read or write. A symlink is followed:
/// what matters is the file that will be read.
pub fn check_secret_file(path: &Path) -> Result<(), FileProblem> {
    let metadata = fs::metadata(path).map_err(|source| FileProblem::Io {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(FileProblem::NotAFile {
            path: path.to_owned(),
        });
    }
    match mode_of(&metadata) {
        Some(mode) if mode & 0o077 != 0 => Err(FileProblem::SharedFile {
            path: path.to_owned(),
            mode,
        }),
        _ => Ok(()),
    }
}

/// Checks a folder authd keeps state or secrets in (`storage.path`, `jwt.keys_dir`): one
/// that group or others may write to lets them plant or swap files in it.
pub fn check_private_dir(path: &Path) -> Result<(), FileProblem> {
    let metadata = fs::metadata(path).map_err(|source| FileProblem::Io {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(FileProblem::NotADir {
            path: path.to_owned(),
        });
    }
    match mode_of(&metadata) {
        Some(mode) if mode & 0o022 != 0 => Err(FileProblem::SharedDir {
            path: path.to_owned(),
            mode,
        }),
        _ => Ok(()),
    }
}

/// Checks that the entry `path` of folder `dir`, when it is a symbolic link, points at
/// another entry of `dir` itself. The link is read, never followed: its target is judged by
/// its text, so a link to a folder elsewhere (or to `../x`) is refused even if it dangles.
pub fn check_link_stays_inside(dir: &Path, path: &Path) -> Result<(), FileProblem> {
    let io_error = |source| FileProblem::Io {
        path: path.to_owned(),
        source,
    };
    if !fs::symlink_metadata(path)
        .map_err(io_error)?
        .file_type()
        .is_symlink()
    {
        return Ok(());
    }
    let target = fs::read_link(path).map_err(io_error)?;
    let resolved = normalize(&dir.join(&target));
    let inside = |folder: &Path| resolved.parent() == Some(folder) && resolved != *folder;
    // `dir` may be given through a symlinked path of its own: its real path counts too.
    let real_dir = fs::canonicalize(dir).ok();
    if inside(&normalize(dir)) || real_dir.as_deref().is_some_and(inside) {
        return Ok(());
    }
    Err(FileProblem::SymlinkOut {
        path: path.to_owned(),
        target,
    })
}

/// Reads a token file (admin, feed): a secret file (see [`check_secret_file`]) holding at
/// least [`MIN_TOKEN_BYTES`] bytes once surrounding whitespace is trimmed. Returns the
/// trimmed token.
pub fn read_token_file(path: &Path) -> Result<String, FileProblem> {
    check_secret_file(path)?;
    let text = fs::read_to_string(path).map_err(|source| FileProblem::Io {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(FileProblem::ShortToken {
            path: path.to_owned(),
            len: token.len(),
            min: MIN_TOKEN_BYTES,
        });
    }
    Ok(token.to_owned())
}

/// The permission bits, where the platform has them.
fn mode_of(metadata: &fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Some(metadata.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        None
    }
}

/// `path` with `.` and `..` resolved by their text alone (no file system access, so no
/// symlink is followed).
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
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

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_or_write_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private_file_new(&path, b"x").unwrap();
        assert!(check_secret_file(&path).is_ok());

        for mode in [0o640, 0o604, 0o620, 0o602] {
            set_mode(&path, mode);
            let problem = check_secret_file(&path).unwrap_err();
            assert!(
                matches!(problem, FileProblem::SharedFile { .. }),
                "{mode:o}"
            );
            assert_eq!(problem.path(), path);
            assert!(problem.to_string().contains(&path.display().to_string()));
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_to_is_refused_and_a_readable_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("data");
        create_private_dir(&folder).unwrap();
        set_mode(&folder, 0o755);
        assert!(check_private_dir(&folder).is_ok());

        for mode in [0o770, 0o707, 0o1777] {
            set_mode(&folder, mode);
            let problem = check_private_dir(&folder).unwrap_err();
            assert!(matches!(problem, FileProblem::SharedDir { .. }), "{mode:o}");
            assert!(problem.to_string().contains(&folder.display().to_string()));
        }
    }

    #[cfg(unix)]
    #[test]
    fn only_links_to_entries_of_the_same_folder_pass() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        create_private_dir(&keys).unwrap();
        write_private_file_new(&keys.join("a.key"), b"x").unwrap();
        write_private_file_new(&dir.path().join("outside.key"), b"x").unwrap();
        let links = [
            ("same.key", PathBuf::from("a.key"), true),
            ("dot.key", PathBuf::from("./a.key"), true),
            ("absolute.key", keys.join("a.key"), true),
            ("up.key", PathBuf::from("../outside.key"), false),
            ("away.key", dir.path().join("outside.key"), false),
            ("etc.key", PathBuf::from("/etc/passwd"), false),
            ("dangling.key", PathBuf::from("/nowhere/at/all"), false),
            ("self.key", PathBuf::from("."), false),
            ("plain", PathBuf::from("a.key"), true),
        ];
        for (name, target, _) in &links {
            symlink(target, keys.join(name)).unwrap();
        }

        for (name, target, allowed) in links {
            let path = keys.join(name);
            let result = check_link_stays_inside(&keys, &path);
            assert_eq!(result.is_ok(), allowed, "{name} -> {}", target.display());
            if let Err(problem) = result {
                assert!(matches!(problem, FileProblem::SymlinkOut { .. }));
                assert!(problem.to_string().contains(&path.display().to_string()));
            }
        }
        assert!(check_link_stays_inside(&keys, &keys.join("a.key")).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_needs_32_bytes_after_trimming_and_an_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        write_private_file_new(&short, format!("  {}\n", "x".repeat(31)).as_bytes()).unwrap();
        let long = dir.path().join("long");
        write_private_file_new(&long, format!("\n{}\n", "y".repeat(32)).as_bytes()).unwrap();

        let problem = read_token_file(&short).unwrap_err();
        assert!(
            matches!(
                problem,
                FileProblem::ShortToken {
                    len: 31,
                    min: 32,
                    ..
                }
            ),
            "{problem}"
        );
        assert!(problem.to_string().contains(&short.display().to_string()));
        assert_eq!(read_token_file(&long).unwrap(), "y".repeat(32));

        set_mode(&long, 0o644);
        assert!(matches!(
            read_token_file(&long).unwrap_err(),
            FileProblem::SharedFile { .. }
        ));
    }
}
