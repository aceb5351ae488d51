//! README "Running a cluster": `examples/cluster/run.sh` run as a user would run it, with
//! this build's `authd` — 3 etcd members and 3 authd instances on 127.0.0.21–23, a login on
//! one verified on the others, a revocation refused everywhere — and it must exit 0.
//!
//! Needs `etcd`, `etcdctl` (Debian: etcd-server, etcd-client; `.ci/run` installs them) and
//! `curl`. Without them the test is skipped with a note on a developer's machine, and fails
//! in CI (`CI` set), where a missing etcd means a broken install step.

// A real script with real processes, on real time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script's own waits add up to well under this; past it, something hangs.
const DEADLINE: Duration = Duration::from_secs(180);

/// Whether `tool version_arg` runs; when it does not, skips (or fails in CI) with a note.
fn installed((tool, version_arg): (&str, &str)) -> bool {
    let runs = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if runs {
        return true;
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    assert!(
        !in_ci,
        "`{tool}` is not installed: the cluster recipe needs etcd, etcdctl and curl \
         (apt-get install etcd-server etcd-client curl; `.ci/run` does it)"
    );
    eprintln!(
        "SKIPPED: `{tool}` is not installed, so the cluster recipe (examples/cluster/run.sh) \
         is not run here (apt-get install etcd-server etcd-client curl to run it)"
    );
    false
}

#[test]
fn the_cluster_recipe_runs_to_the_end() {
    let tools = [
        ("etcd", "--version"),
        ("etcdctl", "version"),
        ("curl", "--version"),
    ];
    if !tools.into_iter().all(installed) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster/run.sh");
    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .env("AUTHD", env!("CARGO_BIN_EXE_authd"))
        .env("WORK", work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Both pipes drained on their own threads, so a chatty script cannot block on them.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            // The script's trap stops the etcd members and authd instances it started.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());

    let report = format!("--- stdout\n{out}\n--- stderr\n{err}");
    match status {
        None => panic!("run.sh did not finish within {DEADLINE:?}\n{report}"),
        Some(status) => assert!(status.success(), "run.sh failed: {status}\n{report}"),
    }
    assert!(out.contains("all checks passed"), "{report}");
    // The three members, as `authd cluster status` listed them.
    for ip in ["127.0.0.21", "127.0.0.22", "127.0.0.23"] {
        assert!(
            out.contains(&format!("{ip}:8080  {}", env!("CARGO_PKG_VERSION"))),
            "{ip}: {report}"
        );
    }
}
