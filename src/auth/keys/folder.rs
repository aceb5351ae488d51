//! The keys folder: which entries are key files (`<kid>.key`, `<kid>.pem`; anything else
//! is ignored), the checks on the folder (nobody but its owner may write to it, no symlink
//! in it points outside it) and on each file before it is read (regular, owner-only,
//! small), and reading them all into keys with unique kids.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use p256::pkcs8::der::zeroize::Zeroizing;

use super::parse::{parse_hmac, parse_pkcs8, self_test};
use super::{Key, KeyError};
use crate::files;

/// Key files are small; anything larger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Longest kid accepted.
const MAX_KID_LEN: usize = 64;

/// Whether `kid` is a valid key id: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads every key file of `dir`, sorted by kid.
pub(super) fn read_keys(dir: &Path) -> Result<Vec<Key>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    // Whoever can write to the folder can swap the signing key.
    files::check_private_dir(dir).map_err(file_problem)?;
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        // Every entry, key file or not: a link out of the folder is either a key kept
        // where its mode is not ours to check, or a way to make authd read another file.
        files::check_link_stays_inside(dir, &path).map_err(file_problem)?;
        if let Some(file) = key_file(&path)? {
            files.push(file);
        }
    }
    // Sorted so that errors and duplicate reports are deterministic.
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let mut keys: Vec<(Key, PathBuf)> = Vec::with_capacity(files.len());
    for file in files {
        let key = read_key(&file)?;
        if let Some((_, first)) = keys.iter().find(|(other, _)| other.kid == key.kid) {
            return Err(KeyError::DuplicateKid {
                kid: key.kid,
                first: first.clone(),
                second: file.path,
            });
        }
        keys.push((key, file.path));
    }
    keys.sort_by(|(a, _), (b, _)| a.kid.cmp(&b.kid));
    Ok(keys.into_iter().map(|(key, _)| key).collect())
}

/// A failed check as a key error; an I/O failure stays one (a missing folder is how
/// `ensure_key` learns that it must create it).
fn file_problem(problem: files::FileProblem) -> KeyError {
    match problem {
        files::FileProblem::Io { path, source } => KeyError::Io { path, source },
        other => KeyError::File(other),
    }
}

/// What kind of key file a name says it is.
enum FileKind {
    Hmac,
    Pkcs8,
}

struct KeyFile {
    path: PathBuf,
    kid: String,
    kind: FileKind,
}

/// Classifies a directory entry: `Some` for `<kid>.key` and `<kid>.pem`, `None` for
/// anything else (READMEs, editor backups, dotfiles); an invalid kid is an error.
fn key_file(path: &Path) -> Result<Option<KeyFile>, KeyError> {
    let Some(name) = path.file_name() else {
        return Ok(None);
    };
    if name.as_encoded_bytes().starts_with(b".") {
        return Ok(None);
    }
    let kind = match path.extension().and_then(|ext| ext.to_str()) {
        Some("key") => FileKind::Hmac,
        Some("pem") => FileKind::Pkcs8,
        _ => return Ok(None),
    };
    let kid = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|kid| is_valid_kid(kid))
        .ok_or_else(|| KeyError::InvalidKid {
            path: path.to_owned(),
        })?;
    Ok(Some(KeyFile {
        kid: kid.to_owned(),
        path: path.to_owned(),
        kind,
    }))
}

fn read_key(file: &KeyFile) -> Result<Key, KeyError> {
    let path = &file.path;
    let invalid = |reason: String| KeyError::Invalid {
        path: path.clone(),
        reason,
    };
    let contents = read_key_file(path)?;
    let (alg, encoding, decoding) = match file.kind {
        FileKind::Hmac => parse_hmac(&contents),
        FileKind::Pkcs8 => parse_pkcs8(&contents),
    }
    .map_err(invalid)?;
    self_test(alg, &encoding, &decoding).map_err(invalid)?;
    Ok(Key {
        kid: file.kid.clone(),
        alg,
        encoding,
        decoding,
    })
}

/// Reads a key file after checking that it is a regular file only its owner can access.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    // Checked before opening: opening a FIFO would block.
    if !fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(KeyError::Invalid {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let file = fs::File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Invalid {
            path: path.to_owned(),
            reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes, not a key file"),
        });
    }
    let mut contents = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_end(&mut contents)
        .map_err(io_error)?;
    Ok(contents)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::super::test_support::{set_mode, t0, write_file};
    use super::super::{KeyAlgorithm, KeySet, generate_key};
    use super::*;

    #[cfg(unix)]
    #[test]
    fn group_readable_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();
        let path = dir.path().join(format!("{kid}.key"));
        set_mode(&path, 0o640);

        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        let message = err.to_string();
        assert!(matches!(err, KeyError::Permissions { mode: 0o640, .. }));
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }

    #[test]
    fn unrelated_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        for name in [
            "README",
            "notes.txt",
            "k.pem~",
            "k.pem.bak",
            ".hidden.pem",
            "#k.key#",
        ] {
            write_file(dir.path(), name, "not a key", 0o644);
        }

        let set = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap();

        assert_eq!(set.kids(), [kid.as_str()]);
    }

    #[test]
    fn invalid_kid_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = STANDARD.encode([1u8; 32]);
        write_file(dir.path(), "bad kid.key", &secret, 0o600);

        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        assert!(matches!(err, KeyError::InvalidKid { .. }));
        assert!(err.to_string().contains("bad kid.key"), "{err}");
        assert!(is_valid_kid(&"a".repeat(64)));
        assert!(!is_valid_kid(&"a".repeat(65)));
        assert!(!is_valid_kid(""));
        assert!(!is_valid_kid("é"));
    }

    #[test]
    fn the_same_kid_in_two_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        write_file(
            dir.path(),
            &format!("{kid}.key"),
            &STANDARD.encode([1u8; 32]),
            0o600,
        );

        let err = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap_err();

        assert!(matches!(err, KeyError::DuplicateKid { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_keys_folder_others_can_write_to_is_rejected_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        generate_key(dir.path(), KeyAlgorithm::EdDSA, t0()).unwrap();
        set_mode(dir.path(), 0o770);

        let err = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap_err();

        assert!(matches!(err, KeyError::File(_)), "{err}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        set_mode(dir.path(), 0o755);
        assert!(KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_keys_folder_is_rejected_and_one_within_it_is_not() {
        let outside = tempfile::tempdir().unwrap();
        let foreign = generate_key(outside.path(), KeyAlgorithm::HS256, t0()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let own = generate_key(dir.path(), KeyAlgorithm::HS256, t0()).unwrap();
        std::os::unix::fs::symlink(format!("{own}.key"), dir.path().join("alias.key")).unwrap();
        // A link to a key of the folder itself is that key under a second kid.
        let set = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap();
        assert_eq!(set.kids(), [own.as_str(), "alias"]);

        let link = dir.path().join("planted.key");
        std::os::unix::fs::symlink(outside.path().join(format!("{foreign}.key")), &link).unwrap();
        let err = KeySet::load(dir.path(), KeyAlgorithm::HS256, None).unwrap_err();

        assert!(matches!(err, KeyError::File(_)), "{err}");
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{err}"
        );
    }
}
