//! This instance as a member of its deployment: its node id (the file `node.id` in
//! `storage.path`, made at first start, so the same across restarts), what it tells the
//! others about itself ([`describe`], the record of `GET /admin/v1/cluster` and of the
//! cluster heartbeat), and which members hold another key set ([`keyset_mismatch`]).
//!
//! Plain data and one small file; no HTTP, no etcd.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::keys::KeySet;
use crate::files::{create_private_dir, write_private_file_new};
use crate::store::{MemberRecord, UnixSeconds};

/// The file in `storage.path` that holds the node id.
pub const NODE_FILE: &str = "node.id";

/// Random bytes in a new node id (128 bits: no two instances ever draw the same).
const NODE_ID_BYTES: usize = 16;

/// Longest node id read back from [`NODE_FILE`].
const MAX_NODE_ID_LEN: usize = 64;

/// Who this instance is, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique per instance, the same across its restarts.
    pub node: String,
    /// When this run of the instance started.
    pub started_at: UnixSeconds,
    /// The public listener's `host:port` (as bound: a port 0 in the configuration is the
    /// real port here).
    pub public_addr: String,
}

/// Why the node id could not be had. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error("cannot {action} the node id file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the node id file {} does not hold a node id (1 to {MAX_NODE_ID_LEN} characters of \
         A-Z, a-z, 0-9, `.`, `_` and `-`); remove it and the next start makes a new one",
        path.display()
    )]
    Invalid { path: PathBuf },
    #[error("cannot make a node id for {}: the random source failed ({source})", path.display())]
    Random {
        path: PathBuf,
        source: crate::random::RandomError,
    },
}

impl Instance {
    /// This instance at start: the node id of `data_dir` (made there at first start),
    /// started `now`, serving the public listener at `public_addr`. Blocking file I/O.
    pub fn start(
        data_dir: &Path,
        public_addr: SocketAddr,
        now: UnixSeconds,
    ) -> Result<Instance, NodeIdError> {
        Ok(Instance {
            node: node_id(data_dir)?,
            started_at: now,
            public_addr: public_addr.to_string(),
        })
    }
}

/// The node id kept in `data_dir`: read from [`NODE_FILE`], or, at first start, 128
/// random bits in hex written there (mode 0600, never overwritten; the folder is made
/// 0700 if missing). Blocking file I/O.
pub fn node_id(data_dir: &Path) -> Result<String, NodeIdError> {
    let path = data_dir.join(NODE_FILE);
    let io_error = |action, source| NodeIdError::Io {
        action,
        path: path.clone(),
        source,
    };
    match read_node_id(&path) {
        Ok(node) => return Ok(node),
        Err(NodeIdError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    create_private_dir(data_dir).map_err(|source| io_error("create the folder of", source))?;
    let node =
        crate::random::try_random_hex(NODE_ID_BYTES).map_err(|source| NodeIdError::Random {
            path: path.clone(),
            source,
        })?;
    match write_private_file_new(&path, format!("{node}\n").as_bytes()) {
        Ok(()) => Ok(node),
        // Another start on the same folder was first: its id is the one.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_node_id(&path),
        Err(err) => Err(io_error("write", err)),
    }
}

fn read_node_id(path: &Path) -> Result<String, NodeIdError> {
    let text = std::fs::read_to_string(path).map_err(|source| NodeIdError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let node = text.trim();
    let valid = !node.is_empty()
        && node.len() <= MAX_NODE_ID_LEN
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(node.to_owned())
    } else {
        Err(NodeIdError::Invalid {
            path: path.to_owned(),
        })
    }
}

/// What this instance says of itself at `now` with the key set `keys`: its identity,
/// `authd --version`, the kid it signs with and the key set's fingerprint (never a
/// secret). `last_seen` is `now`.
pub fn describe(instance: &Instance, keys: &KeySet, now: UnixSeconds) -> MemberRecord {
    MemberRecord {
        node: instance.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        public_addr: instance.public_addr.clone(),
        started_at: instance.started_at,
        last_seen: now,
        signing_kid: keys.signing_key().kid.clone(),
        keyset: keys.fingerprint(),
    }
}

/// The nodes among `members` (other than `own`) whose key set differs from `own`'s,
/// sorted: worth a warning at start and reload, not a refusal, since a staged rotation
/// passes through it.
pub fn keyset_mismatch(own: &MemberRecord, members: &[MemberRecord]) -> Vec<String> {
    let mut nodes: Vec<String> = members
        .iter()
        .filter(|member| member.node != own.node && member.keyset != own.keyset)
        .map(|member| member.node.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::auth::keys::{KeyAlgorithm, generate_key};

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_node_id_is_made_once_private_and_read_back_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");

        let first = node_id(&data).unwrap();

        assert_eq!(first.len(), 32, "128 bits in hex: {first}");
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        assert_eq!(mode(&data.join(NODE_FILE)), 0o600);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(node_id(&data).unwrap(), first, "the same across restarts");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(node_id(other.path()).unwrap(), first, "unique per instance");
    }

    #[test]
    fn a_hand_written_node_id_is_kept_and_a_broken_one_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(NODE_FILE);
        std::fs::write(&file, "  auth-1.example\n").unwrap();
        assert_eq!(node_id(dir.path()).unwrap(), "auth-1.example");

        for broken in ["", "two words", "a/b", &"x".repeat(65)] {
            std::fs::write(&file, broken).unwrap();
            let err = node_id(dir.path()).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("the node id file {}", file.display())),
                "{broken:?}: {err}"
            );
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                broken,
                "left alone"
            );
        }
    }

    #[test]
    fn describe_tells_identity_version_signing_kid_and_keyset() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), KeyAlgorithm::EdDSA, std::time::UNIX_EPOCH).unwrap();
        let keys = KeySet::load(dir.path(), KeyAlgorithm::EdDSA, None).unwrap();
        let instance = Instance::start(
            &dir.path().join("data"),
            "127.0.0.21:8080".parse().unwrap(),
            1_000,
        )
        .unwrap();

        let record = describe(&instance, &keys, 1_500);

        assert_eq!(record.node, instance.node);
        assert_eq!(record.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(record.public_addr, "127.0.0.21:8080");
        assert_eq!((record.started_at, record.last_seen), (1_000, 1_500));
        assert_eq!(record.signing_kid, kid);
        assert_eq!(record.keyset, keys.fingerprint());
    }

    fn member(node: &str, keyset: &str) -> MemberRecord {
        MemberRecord {
            node: node.to_owned(),
            version: "1".to_owned(),
            public_addr: "127.0.0.1:8080".to_owned(),
            started_at: 0,
            last_seen: 0,
            signing_kid: "k".to_owned(),
            keyset: keyset.to_owned(),
        }
    }

    #[test]
    fn keyset_mismatch_names_exactly_the_other_nodes_with_another_keyset() {
        let own = member("b", "K1");
        let members = [
            member("d", "K2"),
            member("a", "K1"),
            own.clone(),
            member("c", "K3"),
        ];

        assert_eq!(keyset_mismatch(&own, &members), ["c", "d"]);
        assert!(keyset_mismatch(&own, &[own.clone(), member("a", "K1")]).is_empty());
        // Its own entry (an older heartbeat) is never a mismatch.
        assert!(keyset_mismatch(&own, &[member("b", "K0")]).is_empty());
    }
}
