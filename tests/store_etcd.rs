//! The backend contract (src/store/backend.rs) on etcd, through the store's own API against a
//! real etcd member: all-or-nothing conditional commits, commits past etcd's 128-operation
//! limit, revocation positions in commit order across writers, unique ids, read your writes.
//! Each test uses its own key prefix on one member shared by this binary (127.0.20.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use authd::store::etcd::ClientOptions;
use authd::store::{
    Key, NewRevocation, RevocationKind, SessionRecord, Store, StoreError, Txn, UserRecord,
};
use common::etcd::EtcdCluster;

const NOW: i64 = 1_800_000_000;

fn member() -> Option<&'static EtcdCluster> {
    static MEMBER: OnceLock<Option<EtcdCluster>> = OnceLock::new();
    MEMBER
        .get_or_init(|| {
            if !EtcdCluster::installed() {
                eprintln!("etcd not installed: skipped");
                return None;
            }
            Some(EtcdCluster::start(20, 1))
        })
        .as_ref()
}

/// A writer store on a prefix of its own.
fn writer(cluster: &EtcdCluster) -> Store {
    let prefix = format!("/store-test/{}/", authd::random::random_id(8));
    writer_at(cluster, &prefix)
}

fn writer_at(cluster: &EtcdCluster, prefix: &str) -> Store {
    Store::etcd_writer(
        ClientOptions {
            endpoints: cluster.endpoints(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        },
        prefix,
    )
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        account_id: 1,
        username: name.into(),
        password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into(),
        roles: Vec::new(),
        disabled: false,
        created_at: NOW,
        generation: 0,
        second_factor: None,
    }
}

fn session(sid: &str, username: &str) -> SessionRecord {
    SessionRecord {
        sid: sid.into(),
        username: username.into(),
        account_id: 1,
        generation: 0,
        created_at: NOW,
        last_refreshed_at: NOW,
        expires_at: NOW + 3600,
        access_expires_at: NOW + 900,
        with_otp: false,
    }
}

fn jti(id: &str) -> NewRevocation {
    NewRevocation {
        kind: RevocationKind::Jti,
        id: id.into(),
        revoked_at: NOW,
        expires_at: NOW + 3600,
        reason: None,
        ended_sessions: Vec::new(),
        serial: None,
    }
}

#[tokio::test]
async fn a_failed_precondition_writes_nothing() {
    let Some(cluster) = member() else { return };
    let store = writer(cluster);
    let mut create = Txn::default();
    create.expect_user("alice", None).put_user(user("alice"));
    let created = store.commit(create).await.unwrap();

    // Expects alice at a version she is not at: neither the session nor the entry lands.
    let mut stale = Txn::default();
    stale
        .expect(Key::User("alice".into()), Some(created.revision + 1000))
        .put_session(session("s1", "alice"))
        .revoke(&jti("j1"));
    assert!(matches!(
        store.commit(stale).await,
        Err(StoreError::Conflict)
    ));
    assert!(store.session("s1").is_none());
    assert!(
        store
            .revocation(RevocationKind::Jti, "j1")
            .await
            .unwrap()
            .is_none()
    );
    let (entries, _) = store.revocations_page(None, 10).await.unwrap();
    assert!(entries.is_empty(), "a failed commit left {entries:?}");
}

#[tokio::test]
async fn deleting_a_user_with_more_sessions_than_etcds_operation_limit_ends_them_all() {
    let Some(cluster) = member() else { return };
    let prefix = format!("/store-test/{}/", authd::random::random_id(8));
    let store = writer_at(cluster, &prefix);
    let mut create = Txn::default();
    create.put_user(user("carol"));
    store.commit(create).await.unwrap();
    for batch in 0..4 {
        let mut sessions = Txn::default();
        for i in 0..50 {
            sessions.put_session(session(&format!("s{batch}-{i}"), "carol"));
        }
        store.commit(sessions).await.unwrap();
    }
    assert_eq!(store.sessions_of("carol").len(), 200);

    // One commit: the user, her 200 sessions and a user entry — over 128 operations.
    let mut delete = Txn::default();
    delete
        .expect_user("carol", store.user("carol").as_ref())
        .delete(Key::User("carol".into()))
        .revoke(&NewRevocation {
            kind: RevocationKind::User,
            ..jti("carol")
        });
    for session in store.sessions_of("carol") {
        delete.delete(Key::Session(session.record.sid.clone()));
    }
    store.commit(delete).await.unwrap();
    assert!(store.user("carol").is_none());
    assert!(store.sessions_of("carol").is_empty());
    // In etcd itself, not only in this writer's view: nothing is left under s/.
    assert_eq!(cluster.keys(&format!("{prefix}s/")), Vec::<String>::new());
}

#[tokio::test]
async fn a_commit_of_more_writes_than_etcd_takes_is_refused_whole() {
    let Some(cluster) = member() else { return };
    let store = writer(cluster);
    let mut big = Txn::default();
    for i in 0..200 {
        big.put_user(user(&format!("user{i:03}")));
    }
    assert!(matches!(
        store.commit(big).await,
        Err(StoreError::Unavailable(_))
    ));
    let (users, _) = store.users_page(None, 1000).await.unwrap();
    assert!(
        users.is_empty(),
        "a refused commit wrote {} users",
        users.len()
    );
}

#[tokio::test]
async fn too_many_preconditions_are_refused_whole() {
    let Some(cluster) = member() else { return };
    let store = writer(cluster);
    let mut txn = Txn::default();
    for i in 0..129 {
        txn.expect(Key::Session(format!("s{i}")), None);
    }
    txn.put_user(user("bob"));
    assert!(matches!(
        store.commit(txn).await,
        Err(StoreError::Unavailable(_))
    ));
    let (users, _) = store.users_page(None, 10).await.unwrap();
    assert!(users.is_empty());
}

#[tokio::test]
async fn revocation_positions_follow_commit_order_across_writers() {
    let Some(cluster) = member() else { return };
    let prefix = format!("/store-test/{}/", authd::random::random_id(8));
    let writers: Vec<Arc<Store>> = (0..3)
        .map(|_| Arc::new(writer_at(cluster, &prefix)))
        .collect();
    let mut tasks = Vec::new();
    for (w, store) in writers.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for i in 0..20 {
                let mut txn = Txn::default();
                txn.revoke(&jti(&format!("w{w}-{i}")));
                let committed = store.commit(txn).await.unwrap();
                placed.push((committed.revision, committed.revocations[0].seq));
            }
            placed
        }));
    }
    let mut placed = Vec::new();
    for task in tasks {
        placed.extend(task.await.unwrap());
    }
    // Sorted by commit revision, the positions increase strictly: a cursor never skips.
    placed.sort_unstable();
    assert_eq!(placed.len(), 60);
    for pair in placed.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "positions out of commit order: {pair:?}"
        );
    }
    let (entries, next) = writers[0].revocations_page(None, 1000).await.unwrap();
    assert_eq!((entries.len(), next), (60, None));
    // Paging from a cursor continues exactly after it.
    let (first, cursor) = writers[0].revocations_page(None, 25).await.unwrap();
    let (rest, _) = writers[0].revocations_page(cursor, 1000).await.unwrap();
    assert_eq!(first.len() + rest.len(), 60);
    assert!(first.last().unwrap().seq < rest[0].seq);
}

#[tokio::test]
async fn ids_are_unique_across_writers() {
    let Some(cluster) = member() else { return };
    let prefix = format!("/store-test/{}/", authd::random::random_id(8));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = writer_at(cluster, &prefix);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..15 {
                ids.push(store.next_id().await.unwrap());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "an id was handed out twice");
}

#[tokio::test]
async fn replacing_an_entry_moves_it_to_the_end_of_the_list() {
    let Some(cluster) = member() else { return };
    let store = writer(cluster);
    for id in ["a", "b"] {
        let mut txn = Txn::default();
        txn.revoke(&NewRevocation {
            kind: RevocationKind::User,
            ..jti(id)
        });
        store.commit(txn).await.unwrap();
    }
    let mut again = Txn::default();
    again.revoke(&NewRevocation {
        kind: RevocationKind::User,
        ..jti("a")
    });
    store.commit(again).await.unwrap();
    let (entries, _) = store.revocations_page(None, 10).await.unwrap();
    let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
}
