#!/usr/bin/env bash
# authd in cluster mode on one machine: a 3-member etcd cluster and 3 authd instances, each
# member and instance on its own loopback address, then the checks a deployment must pass.
#
#   etcd    127.0.0.21:2379  127.0.0.22:2379  127.0.0.23:2379   (peers on :2380)
#   authd   127.0.0.21:8080  127.0.0.22:8080  127.0.0.23:8080   (admin listeners on :8081)
#
# 1. starts the etcd members, with auto-compaction (etcd 3.4 has none by default);
# 2. starts the first authd, which creates the keys and the admin token and records their
#    fingerprints in etcd; copies those secret files to the other two and starts them;
# 3. creates a user on the first instance, logs in there and verifies the token on the
#    other two at once; revokes the session and checks that the other two answer 401;
# 4. defragments etcd (do that now and then in production) and stops everything.
#
# Usage: examples/cluster/run.sh [--keep]
#   --keep   leave everything running at the end (the script prints how to stop it)
# Environment:
#   AUTHD    the authd binary (default: `authd` from PATH, else target/release or
#            target/debug of this repository)
#   WORK     the folder for configurations, data and logs (default: a new temporary one,
#            removed at the end unless --keep)
#
# Needs etcd and etcdctl (Debian: etcd-server, etcd-client) and curl. Linux routes all of
# 127.0.0.0/8 to the loopback interface, so the addresses need no setup.
set -euo pipefail
umask 077

keep=0
case "${1:-}" in
    --keep) keep=1 ;;
    "") ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [[ -z "${AUTHD:-}" ]]; then
    for candidate in "$(command -v authd || true)" "$repo/target/release/authd" "$repo/target/debug/authd"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then AUTHD=$candidate; break; fi
    done
fi
if [[ -z "${AUTHD:-}" || ! -x "$AUTHD" ]]; then
    echo "no authd binary: build it (cargo build --release) or set AUTHD=/path/to/authd" >&2
    exit 1
fi
for tool in etcd etcdctl curl; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
# Only this script's settings: an AUTHD__… variable (or AUTHD_CONFIG) of the caller would
# override them.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^AUTHD_' || true)

if [[ -n "${WORK:-}" ]]; then
    mkdir -p "$WORK"
    work=$(cd "$WORK" && pwd)
    remove_work=0
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/authd-cluster.XXXXXX")
    remove_work=$((1 - keep))
fi

ips=(127.0.0.21 127.0.0.22 127.0.0.23)
endpoints="http://${ips[0]}:2379,http://${ips[1]}:2379,http://${ips[2]}:2379"
peers="m1=http://${ips[0]}:2380,m2=http://${ips[1]}:2380,m3=http://${ips[2]}:2380"
password="correct horse battery staple"
etcd_pids=()
authd_pids=()

log() { printf '%s %s\n' "$(date -u +%H:%M:%S.%3N)" "$*"; }

stop_all() {
    local status=$?
    trap - EXIT
    if ((status != 0)); then
        log "FAILED (exit $status); the last log lines:"
        for file in "$work"/authd*.log "$work"/etcd*.log; do
            [[ -e "$file" ]] || continue
            echo "--- $file"
            tail -n 8 "$file" || true
        done
    fi
    # authd first: a stopping instance still tells etcd it leaves.
    local group
    for group in authd etcd; do
        local -n group_pids="${group}_pids"
        if ((${#group_pids[@]})); then
            kill -TERM "${group_pids[@]}" 2>/dev/null || true
            wait "${group_pids[@]}" 2>/dev/null || true
        fi
    done
    if ((remove_work)); then rm -rf "$work"; fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `$@` every 50 ms until it succeeds, for at most $1 seconds.
until_ok() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "gave up after ${seconds}s waiting for: $*"
            return 1
        fi
        sleep 0.05
    done
}

# ----- etcd: three members, auto-compaction on ---------------------------------------------

for i in 1 2 3; do
    ip=${ips[i - 1]}
    etcd --name "m$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
        --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
        --initial-cluster "$peers" --initial-cluster-token authd-example \
        --initial-cluster-state new \
        --auto-compaction-mode periodic --auto-compaction-retention 1h \
        --logger zap >"$work/etcd$i.log" 2>&1 &
    etcd_pids+=($!)
done
log "etcd: starting 3 members ($endpoints)"
until_ok 30 etcdctl --endpoints "$endpoints" endpoint health
log "etcd: all 3 members healthy"

# ----- authd: one configuration each, the same but for addresses and data ------------------

write_config() { # $1: instance number
    local ip=${ips[$1 - 1]} dir="$work/authd$1"
    install -d -m 0700 "$dir" "$dir/data"
    cat >"$dir/config.toml" <<TOML
# authd instance $1 of 3 (generated by examples/cluster/run.sh)
[server]
listen = "$ip:8080"
admin_listen = "$ip:8081"

[storage]
backend = "etcd"
path = "data"                 # node.id; this instance's own

[etcd]
endpoints = ["http://${ips[0]}:2379", "http://${ips[1]}:2379", "http://${ips[2]}:2379"]
prefix = "/authd-example/"

[jwt]
keys_dir = "data/keys"        # copied from instance 1

[admin]
token_file = "data/admin.token"   # copied from instance 1
TOML
}

start_authd() { # $1: instance number
    "$AUTHD" serve --config "$work/authd$1/config.toml" >"$work/authd$1.log" 2>&1 &
    authd_pids+=($!)
}

ready() { # $1: instance number
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://${ips[$1 - 1]}:8080/readyz") == 200 ]]
}

for i in 1 2 3; do write_config "$i"; done
start_authd 1
until_ok 30 ready 1
log "authd 1: ready; it created the deployment's keys and admin token"

# The secrets every instance shares: the key files and the token files (never node.id,
# which names the instance, nor anything else in the data folder).
for i in 2 3; do
    install -d -m 0700 "$work/authd$i/data/keys"
    cp -p "$work"/authd1/data/keys/* "$work/authd$i/data/keys/"
    for secret in admin.token feed.token mfa.key; do
        if [[ -e "$work/authd1/data/$secret" ]]; then
            cp -p "$work/authd1/data/$secret" "$work/authd$i/data/$secret"
        fi
    done
    start_authd "$i"
done
until_ok 30 ready 2
until_ok 30 ready 3
log "authd 2 and 3: ready"

members() { # the number of members instance 1 lists
    "$AUTHD" cluster status --config "$work/authd1/config.toml" | grep -c .
}
has_three_members() { [[ $(members) == 3 ]]; }
until_ok 10 has_three_members
"$AUTHD" cluster status --config "$work/authd1/config.toml"

# ----- a user, a login on one instance, verification on the others -------------------------

printf '%s\n' "$password" | "$AUTHD" user add alice --config "$work/authd1/config.toml"
answer=$(curl -s --fail-with-body -H 'Content-Type: application/json' \
    -d "{\"username\":\"alice\",\"password\":\"$password\"}" "http://${ips[0]}:8080/v1/login")
token=$(printf '%s' "$answer" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[[ -n "$token" ]] || { log "no access token in the login answer: $answer"; exit 1; }
log "alice logged in on authd 1"

verify() { # $1: instance number; prints the status of GET /v1/verify with alice's token
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
        "http://${ips[$1 - 1]}:8080/v1/verify"
}
for i in 2 3; do
    status=$(verify "$i")
    [[ $status == 200 ]] || { log "authd $i answered $status to a token from authd 1"; exit 1; }
done
log "authd 2 and 3 accept the token at once (200)"

# ----- revocation on one instance reaches the others ---------------------------------------

"$AUTHD" revoke --user alice --reason "run.sh" --config "$work/authd1/config.toml"
refused() { [[ $(verify "$1") == 401 ]]; }
started=$(date +%s%N)
# API.md: on the other instances within 1 s while they reach a quorum.
until_ok 5 refused 2
until_ok 5 refused 3
log "authd 2 and 3 refuse the revoked token (401) after $((($(date +%s%N) - started) / 1000000)) ms"
[[ $(verify 1) == 401 ]] || { log "authd 1 still accepts the revoked token"; exit 1; }

# ----- etcd upkeep: defragment now and then (cron or a systemd timer) -----------------------

etcdctl --endpoints "$endpoints" defrag --cluster >/dev/null
log "etcd: defragmented"

if ((keep)); then
    trap - EXIT
    log "left running (--keep): data, configurations and logs in $work"
    echo "stop it with: kill ${authd_pids[*]}; then: kill ${etcd_pids[*]}"
    exit 0
fi
log "all checks passed; stopping"
