#!/usr/bin/env python3
"""authd benchmark harness (issues 6, 13 and 15): see bench/README.md.

Builds authd, the floor route (examples/floor.rs), the seeder (examples/seed.rs) and the feed
load client (examples/feed_load.rs) in release mode, starts them on loopback ports in a
temporary folder, drives them with wrk (and a few Python clients for what wrk cannot do), and
prints one line per figure.

The cluster figures (issue 13, `--only cluster`) also start a 3-member etcd cluster on
127.0.0.31-33 (etcd and etcdctl must be installed) and authd instances backed by it.

The revocation-feed figures (issue 15, `--only feed`) drive authd's SSE feed with
examples/feed_load.rs: 1,000 streams held open while it makes 200 revocations/s.

Python 3.11 standard library only; wrk (Debian package `wrk`) and du must be installed.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

# The figures in the order they are printed, with their prerequisites.
FIGURES = [
    "floor",
    "verify_one",
    "verify_10k",
    "verify_revoked_1m",
    "startup_1m",
    "backup_1m",
    "restore_1m",
    "verify_p99_storm",
    "login_rps",
    "login_peak_rss",
    "revoke_visible_p99",
    "purge",
    "feed_delivery_p99",
    "feed_verify_ratio",
    "cluster_propagation",
    "cluster_verify_ratio",
    "cluster_login_rps",
    "cluster_restart",
]
# The cluster figures need etcd and take minutes of their own: they run when named (or with
# `--only cluster`), not in the default run.
CLUSTER_FIGURES = [name for name in FIGURES if name.startswith("cluster_")]
# The revocation-feed figures (issue 15, `--only feed`) hold 1,000 streams open and load both
# cores for a minute or two: they run when named, not in the default run.
FEED_FIGURES = ["feed_delivery_p99", "feed_verify_ratio"]
# The figures measured on the store seeded with 100k users and 1M revocations.
SEEDED_FIGURES = ["verify_revoked_1m", "startup_1m", "backup_1m", "restore_1m"]
NEEDS = {
    "verify_revoked_1m": {"verify_one"},
    "login_peak_rss": {"login_rps"},
    "restore_1m": {"backup_1m"},
}

PASSWORD = "bench-password"
CHEAP_ARGON2 = {"argon2_memory_kib": 64, "argon2_iterations": 1, "argon2_parallelism": 1}
DEFAULT_ARGON2 = {"argon2_memory_kib": 19456, "argon2_iterations": 2, "argon2_parallelism": 1}


# --------------------------------------------------------------------------------------
# Output


def log(message: str) -> None:
    """Progress goes to stderr; the figure lines alone go to stdout."""
    print(f"# {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class HarnessError(Exception):
    pass


@dataclass
class Figure:
    name: str
    value: str
    versus: str = ""
    target: str = ""
    verdict: str = ""  # PASS, FAIL or "" (informational)
    note: str = ""
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        """name, value with unit, comparison (ratio vs floor or bound), target, verdict, note."""
        parts = [f"{self.name:<19}", f"{self.value:>14}", f"  {self.versus:<46}"]
        parts.append(f"target {self.target:<30}" if self.target else " " * 37)
        parts.append(f"{self.verdict or '-':<4}")
        if self.note:
            parts.append(f" {self.note}")
        return " ".join(parts).rstrip()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, pct):
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------------------
# Processes: every child is registered, and killed in `finally` and on signals.

_children: list[subprocess.Popen] = []


def _die_with_parent() -> None:
    """Child side of fork: get SIGKILL if the harness itself dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 15.0) -> int | None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} did not stop within {grace:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ValueError):
        _children.remove(proc)
    return proc.returncode


def stop_all() -> None:
    stop_all_but(None)


def stop_all_but(keep: subprocess.Popen | None) -> None:
    for proc in list(_children):
        if proc is not keep:
            with contextlib.suppress(Exception):
                stop(proc, grace=5.0)


_interrupted = False


def _on_signal(signum, _frame):
    """The first signal unwinds the run (its `finally` stops the children); later ones
    (Ctrl-C reaches both bench/run and the harness) must not interrupt that cleanup."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def free_port() -> int:
    """A port the kernel just handed out on loopback (closed again: a small race that
    start() survives by retrying with fresh ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict:
    """The harness' environment without anything that would change authd's behaviour."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUTHD")
        and k
        not in {
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
        }
    }
    env.pop("RUST_LOG", None)
    return env


# --------------------------------------------------------------------------------------
# HTTP: keep-alive clients on loopback.


class Http:
    def __init__(self, port: int, timeout: float = 20.0):
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, retry=True):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in range(2 if retry else 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.conn.connect()
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, payload
            except TimeoutError:
                self.close()
                raise HarnessError(
                    f"no answer within {self.timeout:.0f} s to {method} {path} on port {self.port}"
                ) from None
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt or not retry:
                    raise
        raise AssertionError("unreachable")


def parallel_map(fn, items, workers: int) -> list:
    """`fn` over `items` on `workers` threads. On an error (or Ctrl-C) the queued calls are
    cancelled and nobody waits for the running ones: they end when the process they talk
    to is stopped."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --------------------------------------------------------------------------------------
# authd and the floor server


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


class Authd:
    """One authd process with its own folder: config.toml, data/ (sled, keys, admin token)
    and authd.log (stdout + stderr)."""

    def __init__(self, binary: Path, folder: Path, name: str, password=None, jwt=None,
                 sections=None):
        self.binary = binary
        self.folder = folder
        self.name = name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.password = dict(password or CHEAP_ARGON2)
        self.jwt = dict(jwt or {})
        # More configuration, merged into the sections written (cluster mode: `storage.backend`
        # and `[etcd]`).
        self.sections = {key: dict(values) for key, values in (sections or {}).items()}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        self.first_start_s = None
        self._admin_token = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "authd.log"

    def write_config(self) -> Path:
        sections = {
            "server": {
                "listen": f"127.0.0.1:{self.port}",
                "admin_listen": f"127.0.0.1:{self.admin_port}",
                "shutdown_grace": "3s",
            },
            "storage": {"path": "data"},
            "jwt": {"keys_dir": "data/keys", **self.jwt},
            "password": self.password,
            "admin": {"token_file": "data/admin.token"},
            # The shipped default level: login and revocation audit lines are part of the
            # cost being measured. They go to authd.log.
            "log": {"level": "info"},
        }
        for section, values in self.sections.items():
            sections.setdefault(section, {}).update(values)
        lines = [f"# written by bench/harness.py for the {self.name} instance"]
        for section, values in sections.items():
            lines.append(f"\n[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        path = self.folder / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 120.0) -> float:
        """Starts authd and waits for `/readyz` 200 (polled every 10 ms); returns the time
        from spawning to that answer, in seconds."""
        for attempt in range(3):
            self.port, self.admin_port = free_port(), free_port()
            if self.port == self.admin_port:
                continue
            config = self.write_config()
            with open(self.log_path, "ab") as out:
                out.write(f"\n==== start {time.strftime('%H:%M:%S')}\n".encode())
                out.flush()
                started = time.monotonic()
                self.proc = spawn(
                    [str(self.binary), "serve", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=clean_env(),
                    cwd=self.folder,
                )
            elapsed = self._wait_ready(started, timeout)
            if elapsed is not None:
                if self.first_start_s is None:
                    self.first_start_s = elapsed
                return elapsed
            tail = self.log_tail()
            stop(self.proc)
            if "in use" in tail.lower() and attempt < 2:
                log(f"{self.name}: port taken, retrying with other ports")
                continue
            raise HarnessError(f"authd ({self.name}) did not become ready; log tail:\n{tail}")
        raise HarnessError(f"authd ({self.name}) could not get free ports")

    def _wait_ready(self, started: float, timeout: float) -> float | None:
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.01)
        return None

    def stop(self) -> None:
        if self.proc is not None:
            code = stop(self.proc)
            if code not in (0, None):
                log(f"{self.name}: authd exited with status {code} (see {self.log_path})")
            self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def vm_hwm_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise HarnessError("no VmHWM in /proc status")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = (self.data / "admin.token").read_text().strip()
        return self._admin_token

    def admin(self) -> Http:
        return Http(self.admin_port)

    def public(self) -> Http:
        return Http(self.port)

    def admin_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_token()}"}

    def create_user(self, username: str, client: Http | None = None) -> None:
        client = client or self.admin()
        status, body = client.request(
            "POST",
            "/admin/v1/users",
            {"username": username, "password": PASSWORD, "roles": []},
            self.admin_headers(),
        )
        if status not in (200, 201, 409):
            raise HarnessError(f"creating {username}: {status} {body[:200]!r}")

    def login(self, username: str, client: Http | None = None) -> str:
        client = client or self.public()
        status, body = client.request(
            "POST", "/v1/login", {"username": username, "password": PASSWORD}
        )
        if status != 200:
            raise HarnessError(f"login of {username}: {status} {body[:200]!r}")
        return json.loads(body)["access_token"]


class Floor:
    def __init__(self, binary: Path, folder: Path):
        self.binary = binary
        self.folder = folder
        self.proc = None
        self.port = 0

    def start(self) -> None:
        for _ in range(3):
            self.port = free_port()
            out = open(self.folder / "floor.log", "ab")
            self.proc = spawn(
                [str(self.binary), f"127.0.0.1:{self.port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            out.close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                    conn.request("GET", "/v1/verify")
                    if conn.getresponse().status == 200:
                        conn.close()
                        return
                time.sleep(0.01)
            stop(self.proc)
        raise HarnessError("the floor server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --------------------------------------------------------------------------------------
# etcd (cluster figures)

ETCD_IPS = ["127.0.0.31", "127.0.0.32", "127.0.0.33"]


class EtcdCluster:
    """Three etcd members on 127.0.0.31-33 (client port 2379, peer port 2380; Linux routes
    all of 127.0.0.0/8 to loopback), data in the harness' folder. Fixed addresses rather
    than probed ports: etcd members must know each other's peer URLs before they start.
    The tests use other addresses."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"http://{ip}:2379" for ip in ETCD_IPS]

    def start(self, timeout: float = 60.0) -> None:
        for tool in ("etcd", "etcdctl"):
            if shutil.which(tool) is None:
                raise HarnessError(f"{tool} is not installed (Debian: apt-get install etcd-server etcd-client)")
        for ip in ETCD_IPS:
            for port in (2379, 2380):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.settimeout(0.5)
                    if sock.connect_ex((ip, port)) == 0:
                        raise HarnessError(
                            f"{ip}:{port} is already taken (an etcd left over from another run?): "
                            "the cluster figures need 127.0.0.31-33 ports 2379 and 2380")
        self.folder.mkdir(parents=True, exist_ok=True)
        peers = ",".join(f"m{i + 1}=http://{ip}:2380" for i, ip in enumerate(ETCD_IPS))
        token = f"authd-bench-{secrets.token_hex(4)}"
        for i, ip in enumerate(ETCD_IPS):
            name = f"m{i + 1}"
            with open(self.folder / f"{name}.log", "ab") as out:
                self.procs.append(spawn(
                    ["etcd", "--name", name, "--data-dir", str(self.folder / name),
                     "--listen-client-urls", f"http://{ip}:2379",
                     "--advertise-client-urls", f"http://{ip}:2379",
                     "--listen-peer-urls", f"http://{ip}:2380",
                     "--initial-advertise-peer-urls", f"http://{ip}:2380",
                     "--initial-cluster", peers, "--initial-cluster-token", token,
                     "--initial-cluster-state", "new", "--log-level", "error"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=clean_env(),
                ))
        deadline = time.monotonic() + timeout
        while True:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise HarnessError(f"an etcd member exited at start; see {self.folder}/m*.log")
            health = subprocess.run(
                ["etcdctl", "--endpoints", ",".join(self.endpoints), "--command-timeout=2s",
                 "endpoint", "health"],
                capture_output=True, text=True, check=False, env=clean_env(),
            )
            if health.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"etcd did not become healthy within {timeout:.0f} s:\n{health.stderr[-1000:]}")
            time.sleep(0.1)

    def db_size_mib(self) -> float:
        """The first member's database size (etcdctl endpoint status)."""
        out = subprocess.run(
            ["etcdctl", "--endpoints", self.endpoints[0], "endpoint", "status", "-w", "json"],
            capture_output=True, text=True, check=False, env=clean_env(),
        )
        with contextlib.suppress(ValueError, KeyError, IndexError):
            return json.loads(out.stdout)[0]["Status"]["dbSize"] / 2**20
        return float("nan")

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, grace=10.0)
        self.procs = []


def etcd_sections(etcd: EtcdCluster, prefix: str) -> dict:
    return {"storage": {"backend": "etcd"}, "etcd": {"endpoints": etcd.endpoints, "prefix": prefix}}


def run_measured(cmd, **kwargs):
    """Runs `cmd` to its end: (wall seconds, its peak RSS in KiB, the completed process with
    stdout and stderr as text)."""
    started = time.monotonic()
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                 env=clean_env(), **kwargs)
    # Pipes drained by threads, so a chatty child cannot block; wait4 gives this one
    # child's rusage (getrusage(RUSAGE_CHILDREN) would mix in every earlier child).
    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda k=k, f=f: chunks[k].append(f.read()), daemon=True)
               for k, f in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    out = subprocess.CompletedProcess(cmd, proc.returncode, b"".join(chunks["out"]).decode(errors="replace"),
                                      b"".join(chunks["err"]).decode(errors="replace"))
    return took, usage.ru_maxrss, out


def copy_secrets(source: Authd, dest: Authd) -> None:
    """The files every instance of a deployment shares, made by the first one: the signing
    keys and the token/key files (never node.id, which names the instance). Folders 0700,
    files 0600, as authd makes them."""
    dest.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    (dest.data / "keys").mkdir(mode=0o700, exist_ok=True)
    files = [Path("keys") / p.name for p in (source.data / "keys").iterdir() if p.is_file()]
    files += [Path(n) for n in ("admin.token", "feed.token", "mfa.key") if (source.data / n).exists()]
    for rel in files:
        shutil.copyfile(source.data / rel, dest.data / rel)
        os.chmod(dest.data / rel, 0o600)


# --------------------------------------------------------------------------------------
# Revocation-feed load (examples/feed_load.rs) and /proc readings


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` line of /proc/PID/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise HarnessError(f"no {key} in /proc/{pid}/status")


class FeedListener:
    """`feed_load listen`: `clients` SSE streams on authd's feed, held until `finish`.
    Its stdout is read by a thread (the summary can be megabytes); stderr goes to a log."""

    def __init__(self, binary: Path, authd: Authd, clients: int, prefix: str, log_path: Path):
        self.binary = binary
        self.authd = authd
        self.clients = clients
        self.prefix = prefix
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.connect_s = float("nan")

    def start(self, timeout: float = 120.0) -> float:
        """Starts the clients and waits until each has its `200` (or failed); returns the
        seconds that took."""
        with open(self.log_path, "ab") as err:
            self.proc = spawn(
                [str(self.binary), "listen", "--url", self.authd.url,
                 "--feed-token-file", str(self.authd.data / "feed.token"),
                 "--clients", str(self.clients), "--prefix", self.prefix],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )
        self.lines = []  # this process's lines (a stopped one's reader keeps its own list)
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        started = time.monotonic()
        line = self._next_line(0, started + timeout)
        if line is None or not line.startswith("connected "):
            raise HarnessError(f"feed_load listen did not connect its clients: {line!r}; see {self.log_path}")
        connected = int(line.split()[1])
        if connected != self.clients:
            raise HarnessError(f"feed_load listen: only {connected} of {self.clients} feed clients got "
                               f"their 200 ({line}); see {self.log_path}")
        self.connect_s = time.monotonic() - started
        return self.connect_s

    def _read(self, proc, lines: list) -> None:
        for line in proc.stdout:
            with self.cond:
                lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            lines.append(None)
            self.cond.notify_all()

    def _next_line(self, index: int, deadline: float):
        with self.cond:
            while len(self.lines) <= index:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(timeout=left)
            return self.lines[index]

    def finish(self, count: int, timeout_ms: int) -> dict:
        """Waits until every client has `count` events (at most `timeout_ms`), ends the
        clients and returns the summary."""
        self.proc.stdin.write(f"finish {count} {timeout_ms}\n")
        self.proc.stdin.flush()
        self.proc.stdin.close()
        line = self._next_line(1, time.monotonic() + timeout_ms / 1000 + 60)
        stop(self.proc)
        self.proc = None
        if not line:
            raise HarnessError(f"feed_load listen printed no summary; see {self.log_path}")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            stop(self.proc)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None


# --------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    errors: int  # socket errors + timeouts
    non2xx: int
    p50_us: int
    p99_us: int
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def problems(self) -> str:
        out = []
        if self.non2xx:
            out.append(f"{self.non2xx} non-2xx")
        if self.errors:
            out.append(f"{self.errors} socket errors/timeouts")
        return ", ".join(out)


class Wrk:
    def __init__(self, duration: int):
        self.duration = duration

    def command(self, url, threads, connections, duration, script, script_args=(), headers=(),
                timeout="5s", latency=False):
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}"]
        if latency:
            cmd.append("--latency")
        for header in headers:
            cmd += ["-H", header]
        cmd += ["-s", str(BENCH / script), url]
        if script_args:
            cmd += ["--", *script_args]
        return cmd

    def start(self, *args, **kwargs) -> subprocess.Popen:
        return spawn(
            self.command(*args, **kwargs),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def finish(self, proc: subprocess.Popen, timeout: float) -> WrkResult:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc, grace=2)
            raise HarnessError("wrk did not finish in time")
        with contextlib.suppress(ValueError):
            _children.remove(proc)
        for line in out.splitlines():
            if line.startswith("BENCH "):
                v = dict(item.split("=", 1) for item in line.split()[1:])
                return WrkResult(
                    requests=int(v["requests"]),
                    duration_s=int(v["duration_us"]) / 1e6,
                    errors=sum(int(v[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
                    non2xx=int(v["non2xx"]),
                    p50_us=int(v["p50_us"]),
                    p99_us=int(v["p99_us"]),
                    max_us=int(v["max_us"]),
                )
        raise HarnessError(f"wrk printed no summary (exit {proc.returncode}):\n{out[-2000:]}")

    def run(self, url, threads=2, connections=32, duration=None, script="summary.lua", **kwargs):
        duration = duration or self.duration
        proc = self.start(url, threads, connections, duration, script, **kwargs)
        return self.finish(proc, timeout=duration + 60)


# --------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args, tmp: Path, binaries: dict):
        self.args = args
        self.tmp = tmp
        self.bin = binaries
        self.wrk = Wrk(args.duration)
        self.results: dict[str, Figure] = {}
        self.floor_samples: list[float] = []
        self.floor: Floor | None = None
        self.cores = len(os.sched_getaffinity(0))
        self.errors = 0
        self._hash_ms: float | None = None
        # authd's VmRSS (KiB) before and after the feed clients first connected to it
        self.feed_rss: tuple[int, int] | None = None

    # ---- helpers

    def guarded(self, group, names) -> None:
        """Runs one group of figures; a harness error (authd not starting or not answering,
        wrk failing) becomes an ERROR line for each of its missing figures, and the next
        group still runs."""
        try:
            group()
        except (HarnessError, subprocess.SubprocessError, OSError) as err:
            self.errors += 1
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            log(f"error: {err}")
            for name in names:
                if self.want(name) and name not in self.results:
                    self.results[name] = Figure(name, "ERROR", "", "", "FAIL", first)
        finally:
            stop_all_but(self.floor.proc if self.floor else None)

    def want(self, name: str) -> bool:
        return name in self.args.selected

    def add(self, figure: Figure) -> None:
        self.results[figure.name] = figure
        log(f"figure: {figure.line()}")

    def ensure_floor(self) -> Floor:
        if self.floor is None:
            self.floor = Floor(self.bin["floor"], self.tmp)
            self.floor.start()
            log(f"floor server on {self.floor.url}")
        return self.floor

    def paired(self, label, authd_url, **wrk_kwargs):
        """Median of `runs` pairs (floor, authd) measured back to back with the same wrk
        request (ABBA order), after a short warm-up of each."""
        floor = self.ensure_floor()
        floor_url = floor.url + "/v1/verify"
        warm = min(2, self.args.duration)
        self.wrk.run(floor_url, duration=warm, **wrk_kwargs)
        self.wrk.run(authd_url, duration=warm, **wrk_kwargs)
        floors, authds, ratios, problems = [], [], [], []
        for run in range(self.args.runs):
            order = [("floor", floor_url), ("authd", authd_url)]
            if run % 2:
                order.reverse()
            got = {}
            for who, url in order:
                got[who] = self.wrk.run(url, **wrk_kwargs)
            floors.append(got["floor"].rps)
            authds.append(got["authd"].rps)
            ratios.append(got["authd"].rps / got["floor"].rps if got["floor"].rps else 0.0)
            for who in ("floor", "authd"):
                if got[who].problems():
                    problems.append(f"{who}: {got[who].problems()}")
            log(f"{label} run {run + 1}: floor {got['floor'].rps:,.0f}/s, authd {got['authd'].rps:,.0f}/s, "
                f"ratio {ratios[-1]:.3f}")
        self.floor_samples += floors
        return {
            "floor_rps": median(floors),
            "authd_rps": median(authds),
            "ratio": median(ratios),
            "floor_runs": floors,
            "authd_runs": authds,
            "ratio_runs": ratios,
            "problems": "; ".join(problems),
        }

    def ratio_figure(self, name, measured, target_ratio, note=""):
        ok = measured["ratio"] >= target_ratio and not measured["problems"]
        notes = [n for n in (note, measured["problems"]) if n]
        return Figure(
            name,
            f"{measured['authd_rps']:,.0f} req/s",
            f"{measured['ratio']:.3f} x floor ({measured['floor_rps']:,.0f} req/s)",
            f">= {target_ratio} x floor",
            verdict(ok),
            "; ".join(notes),
            measured,
        )

    # ---- instances

    def cheap_instance(self) -> Authd:
        authd = Authd(self.bin["authd"], self.tmp / "cheap", "cheap (m=64 KiB, t=1)")
        authd.start()
        log(f"authd (cheap argon2, empty store) on {authd.url}")
        authd.create_user("bench")
        return authd

    # ---- figures

    def run_cheap_group(self) -> None:
        if not any(self.want(n) for n in ("verify_one", "verify_10k", "revoke_visible_p99")):
            return
        authd = self.cheap_instance()
        try:
            token = authd.login("bench")
            verify_url = authd.url + "/v1/verify"
            if self.want("verify_one"):
                log("verify_one: one token, 32 connections")
                measured = self.paired(
                    "verify_one", verify_url, connections=32,
                    headers=[f"Authorization: Bearer {token}"],
                )
                self.add(self.ratio_figure("verify_one", measured, 0.75))
            if self.want("verify_10k"):
                self.verify_many(authd)
            if self.want("revoke_visible_p99"):
                self.revoke_visible(authd)
        finally:
            authd.stop()

    def verify_many(self, authd: Authd) -> None:
        count = self.args.tokens
        users = max(1, min(100, count // 100))
        log(f"verify_10k: creating {users} users and logging in {count} times")
        names = [f"rot{i:03d}" for i in range(users)]
        admin = authd.admin()
        for name in names:
            authd.create_user(name, admin)
        admin.close()
        local = threading.local()

        def login(i):
            if not hasattr(local, "client"):
                local.client = authd.public()
            return authd.login(names[i % users], local.client)

        started = time.monotonic()
        tokens = parallel_map(login, range(count), workers=self.args.client_threads)
        log(f"verify_10k: {len(set(tokens))} distinct tokens in {time.monotonic() - started:.1f} s")
        path = self.tmp / "tokens.txt"
        path.write_text("\n".join(tokens) + "\n")
        measured = self.paired(
            "verify_10k", authd.url + "/v1/verify", connections=32,
            script="tokens.lua", script_args=[str(path)],
        )
        self.add(self.ratio_figure(
            "verify_10k", measured, 0.55, note=f"{len(set(tokens))} tokens" if count != 10_000 else ""
        ))

    def revoke_visible(self, authd: Authd) -> None:
        n = self.args.revoke_samples
        log(f"revoke_visible_p99: {n} × (admin POST jti → GET /v1/verify must be 401)")
        public, admin = authd.public(), authd.admin()
        tokens = [authd.login("bench", public) for _ in range(n)]
        for token in tokens:  # each token verified once before: the cached path must see it
            status, _ = public.request("GET", "/v1/verify", headers={"Authorization": f"Bearer {token}"})
            if status != 200:
                raise HarnessError(f"fresh token not accepted: {status}")
        totals, still_ok = [], 0
        for token in tokens:
            jti = jwt_claims(token)["jti"]
            bearer = {"Authorization": f"Bearer {token}"}
            started = time.perf_counter()
            status, body = admin.request("POST", "/admin/v1/revocations", {"jti": jti}, authd.admin_headers(),
                                         retry=False)
            if status != 200:
                raise HarnessError(f"revocation refused: {status} {body[:200]!r}")
            status, _ = public.request("GET", "/v1/verify", headers=bearer, retry=False)
            totals.append((time.perf_counter() - started) * 1000)
            if status != 401:
                still_ok += 1
        public.close()
        admin.close()
        p99 = percentile(totals, 99)
        ok = p99 <= 20 and still_ok == 0
        note = f"p50 {median(totals):.2f} ms, max {max(totals):.2f} ms, n={n}"
        if still_ok:
            note += f"; {still_ok} revoked tokens still verified!"
        self.add(Figure("revoke_visible_p99", f"{p99:.2f} ms", "admin POST → 401 on next verify",
                        "p99 <= 20 ms", verdict(ok), note,
                        {"p99_ms": p99, "p50_ms": median(totals), "samples_ms": totals}))

    def run_seeded_group(self) -> None:
        if not any(self.want(n) for n in SEEDED_FIGURES):
            return
        authd = Authd(self.bin["authd"], self.tmp / "seeded", "seeded")
        users, revocations = self.args.users, self.args.revocations
        self.seed(authd.data, users, revocations)
        try:
            authd.start(timeout=300)
            log(f"authd (seeded, {revocations:,} revocations, {users:,} users) ready in "
                f"{authd.first_start_s:.2f} s (first start, creates the key) on {authd.url}")
            if self.want("verify_revoked_1m"):
                token = authd.login("user000000")
                measured = self.paired(
                    "verify_revoked_1m", authd.url + "/v1/verify", connections=32,
                    headers=[f"Authorization: Bearer {token}"],
                )
                base = self.results.get("verify_one")
                if base is None or "ratio" not in base.data:
                    self.add(Figure(
                        "verify_revoked_1m", f"{measured['authd_rps']:,.0f} req/s",
                        f"{measured['ratio']:.3f} x floor ({measured['floor_rps']:,.0f} req/s)",
                        ">= 0.95 x verify_one", "FAIL", "no verify_one figure to compare with",
                        measured,
                    ))
                else:
                    normalized = measured["ratio"] / base.data["ratio"]
                    raw = measured["authd_rps"] / base.data["authd_rps"]
                    ok = normalized >= 0.95 and not measured["problems"]
                    notes = [f"raw {raw:.3f} x verify_one"]
                    if (users, revocations) != (100_000, 1_000_000):
                        notes.append(f"{revocations:,} revocations, {users:,} users")
                    if measured["problems"]:
                        notes.append(measured["problems"])
                    self.add(Figure(
                        "verify_revoked_1m", f"{measured['authd_rps']:,.0f} req/s",
                        f"{normalized:.3f} x verify_one ({measured['ratio']:.3f} x floor)",
                        ">= 0.95 x verify_one", verdict(ok), "; ".join(notes),
                        {**measured, "vs_verify_one": normalized, "raw_vs_verify_one": raw},
                    ))
            if self.want("startup_1m"):
                times = []
                for run in range(self.args.runs):
                    authd.stop()
                    times.append(authd.start(timeout=300))
                    log(f"startup_1m run {run + 1}: {times[-1]:.3f} s")
                value = median(times)
                note = f"restarts: {', '.join(f'{t:.2f}' for t in times)} s; first start {authd.first_start_s:.2f} s"
                if (users, revocations) != (100_000, 1_000_000):
                    note += f"; {revocations:,} revocations, {users:,} users"
                self.add(Figure("startup_1m", f"{value:.3f} s", "spawn → first /readyz 200",
                                "<= 2 s", verdict(value <= 2.0), note,
                                {"restarts_s": times, "first_start_s": authd.first_start_s}))
            if self.want("backup_1m"):
                self.backup_and_restore(authd, users, revocations)
        finally:
            authd.stop()

    def backup_and_restore(self, authd: Authd, users: int, revocations: int) -> None:
        """`authd backup` of the seeded store while it serves, then `authd restore` of that
        file into a new sled store: wall time and peak RSS of each, and how much the serving
        daemon's peak RSS grew while it streamed the backup."""
        sizes = "" if (users, revocations) == (100_000, 1_000_000) else \
            f"; {revocations:,} revocations, {users:,} users"
        file = self.tmp / "seeded.backup"
        before_kib = authd.vm_hwm_kib()
        took, rss_kib, out = run_measured(
            [str(self.bin["authd"]), "backup", "--config", str(authd.folder / "config.toml"),
             "--out", str(file)], cwd=authd.folder)
        if out.returncode != 0:
            raise HarnessError(f"authd backup failed: {out.stderr[-2000:]}")
        grew_mib = (authd.vm_hwm_kib() - before_kib) / 1024
        size_mib = file.stat().st_size / 2**20
        records = users + revocations
        ok = grew_mib <= 64
        self.add(Figure(
            "backup_1m", f"{took:.1f} s", f"{records / took:,.0f} records/s, {size_mib:.0f} MiB file",
            "daemon peak RSS grows <= 64 MiB", verdict(ok),
            f"daemon peak RSS +{grew_mib:.1f} MiB (from {before_kib / 1024:.0f} MiB); "
            f"authd backup (client) peak RSS {rss_kib / 1024:.1f} MiB{sizes}",
            {"seconds": took, "daemon_growth_mib": grew_mib, "client_rss_kib": rss_kib,
             "file_mib": size_mib},
        ))
        if not self.want("restore_1m"):
            return
        target = Authd(self.bin["authd"], self.tmp / "restored", "restored")
        copy_secrets(authd, target)
        config = target.write_config()
        took, rss_kib, out = run_measured(
            [str(self.bin["authd"]), "restore", "--config", str(config), "--in", str(file)],
            cwd=target.folder)
        if out.returncode != 0:
            raise HarnessError(f"authd restore failed: {out.stderr[-2000:]}")
        start_s = target.start(timeout=300)
        target.stop()
        ok = rss_kib <= 256 * 1024
        self.add(Figure(
            "restore_1m", f"{took:.1f} s", f"{records / took:,.0f} records/s into sled",
            "peak RSS <= 256 MiB", verdict(ok),
            f"authd restore peak RSS {rss_kib / 1024:.1f} MiB; the restored store served "
            f"(/readyz 200) {start_s:.2f} s after spawn{sizes}",
            {"seconds": took, "rss_kib": rss_kib, "start_s": start_s},
        ))

    def seed(self, data: Path, users: int, revocations: int) -> None:
        cache = None
        if self.args.seed_cache:
            # Keyed by the seeder binary (it links the store code) and the sizes.
            stat = self.bin["seed"].stat()
            key = f"{users}-{revocations}-{stat.st_size}-{int(stat.st_mtime)}"
            cache = Path(self.args.seed_cache) / key
            if (cache / "done").exists():
                log(f"seed: copying the cached store {cache}")
                shutil.copytree(cache / "data", data)
                return
        log(f"seed: {users:,} users and {revocations:,} revoked jtis (offline, examples/seed.rs)")
        started = time.monotonic()
        out = subprocess.run(
            [str(self.bin["seed"]), "fill", "--data", str(data), "--users", str(users),
             "--revocations", str(revocations), "--password", PASSWORD,
             "--memory-kib", str(CHEAP_ARGON2["argon2_memory_kib"]),
             "--iterations", str(CHEAP_ARGON2["argon2_iterations"])],
            capture_output=True, text=True, timeout=1800, check=False,
        )
        if out.returncode != 0:
            raise HarnessError(f"seeding failed:\n{out.stdout}\n{out.stderr}")
        facts = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        log(f"seed: done in {time.monotonic() - started:.1f} s (users {facts.get('users_s')} s, "
            f"revocations {facts.get('revocations_s')} s = {facts.get('revocations_per_s')}/s, "
            f"flush {facts.get('flush_s')} s), store {du_kib(data) / 1024:.0f} MiB")
        self.seed_facts = facts
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
            shutil.copytree(data, cache / "data")
            (cache / "done").write_text("ok\n")

    def run_storm_group(self) -> None:
        if not any(self.want(n) for n in ("verify_p99_storm", "login_rps", "login_peak_rss")):
            return
        hash_ms = self.hash_time()
        authd = Authd(self.bin["authd"], self.tmp / "storm", "storm (default argon2)",
                      password=DEFAULT_ARGON2)
        authd.start()
        log(f"authd (default argon2: m=19456 KiB, t=2, p=1) on {authd.url}")
        try:
            authd.create_user("storm")
            token = authd.login("storm")
            login_url = authd.url + "/v1/login"
            verify_url = authd.url + "/v1/verify"
            storm_args = dict(threads=2, connections=64, script="login.lua",
                              script_args=["storm", PASSWORD], timeout="20s")
            probe_args = dict(threads=1, connections=4, latency=True,
                              headers=[f"Authorization: Bearer {token}"])
            if self.want("login_rps"):
                bound = self.cores / (hash_ms / 1000)
                log(f"login_rps: wrk -c64 on /v1/login; bound {self.cores} cores / {hash_ms:.1f} ms = {bound:.1f}/s")
                self.wrk.run(login_url, duration=min(2, self.args.duration), **storm_args)
                runs, problems = [], []
                for run in range(self.args.runs):
                    result = self.wrk.run(login_url, **storm_args)
                    runs.append(result.rps)
                    if result.problems():
                        problems.append(result.problems())
                    log(f"login_rps run {run + 1}: {result.rps:.1f}/s (p50 {result.p50_us / 1000:.0f} ms)")
                rps = median(runs)
                ratio = rps / bound
                self.add(Figure(
                    "login_rps", f"{rps:,.1f} req/s",
                    f"{ratio:.3f} x bound ({self.cores} / {hash_ms:.1f} ms = {bound:.1f}/s)",
                    ">= 0.85 x bound", verdict(ratio >= 0.85 and not problems), "; ".join(problems),
                    {"rps": rps, "runs": runs, "hash_ms": hash_ms, "bound": bound, "ratio": ratio},
                ))
            if self.want("verify_p99_storm"):
                log("verify_p99_storm: idle probe (wrk -t1 -c4 --latency)")
                self.wrk.run(verify_url, duration=min(2, self.args.duration), **probe_args)
                idle, storm, problems = [], [], []
                for run in range(self.args.runs):
                    result = self.wrk.run(verify_url, **probe_args)
                    idle.append(result.p99_us / 1000)
                    if result.problems():
                        problems.append(f"idle: {result.problems()}")
                for run in range(self.args.runs):
                    # The storm starts 1 s before the probe and ends 1 s after it.
                    stormer = self.wrk.start(login_url, duration=self.args.duration + 2, **storm_args)
                    time.sleep(1)
                    result = self.wrk.run(verify_url, **probe_args)
                    storm_result = self.wrk.finish(stormer, timeout=self.args.duration + 60)
                    storm.append(result.p99_us / 1000)
                    if result.problems():
                        problems.append(f"storm: {result.problems()}")
                    log(f"verify_p99_storm run {run + 1}: p99 idle {idle[run]:.2f} ms, under storm "
                        f"{storm[-1]:.2f} ms ({result.rps:,.0f} verify/s, {storm_result.rps:.1f} login/s)")
                idle_p99, storm_p99 = median(idle), median(storm)
                ratio = storm_p99 / idle_p99 if idle_p99 else float("inf")
                ok = storm_p99 <= 5 and ratio <= 3 and not problems
                self.add(Figure(
                    "verify_p99_storm", f"{storm_p99:.2f} ms",
                    f"{ratio:.2f} x idle p99 ({idle_p99:.2f} ms)",
                    "<= 5 ms and <= 3 x idle", verdict(ok), "; ".join(problems),
                    {"idle_p99_ms": idle, "storm_p99_ms": storm, "ratio": ratio},
                ))
            if self.want("login_peak_rss"):
                hwm = authd.vm_hwm_kib()
                memory_kib = DEFAULT_ARGON2["argon2_memory_kib"]
                bound_kib = self.cores * memory_kib + 64 * 1024
                self.add(Figure(
                    "login_peak_rss", f"{hwm / 1024:.1f} MiB",
                    f"VmHWM vs {self.cores} x {memory_kib / 1024:.0f} MiB + 64 MiB = {bound_kib / 1024:.0f} MiB",
                    "<= bound", verdict(hwm <= bound_kib), "",
                    {"vm_hwm_kib": hwm, "bound_kib": bound_kib},
                ))
        finally:
            authd.stop()

    def hash_time(self) -> float:
        if self._hash_ms is not None:
            return self._hash_ms
        out = subprocess.run(
            [str(self.bin["seed"]), "hash-time", "--runs", "10"],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if out.returncode != 0:
            raise HarnessError(f"hash-time failed:\n{out.stdout}\n{out.stderr}")
        facts = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        hash_ms = float(facts["hash_ms"])
        log(f"one argon2id hash at the defaults: median {hash_ms:.2f} ms of 10 "
            f"(min {facts['hash_min_ms']}, max {facts['hash_max_ms']})")
        self._hash_ms = hash_ms
        return hash_ms

    def run_purge(self) -> None:
        if not self.want("purge"):
            return
        # A revocation entry lives at least until its token's `exp` plus 5 minutes (the
        # largest leeway any configuration may bring), so entries made through the API
        # cannot expire within a benchmark. Each round therefore writes entries that have
        # already expired offline, with authd's own Store (examples/seed.rs), then starts
        # authd and times its background purge (every second with these lifetimes).
        authd = Authd(self.bin["authd"], self.tmp / "purge", "purge",
                      jwt={"access_ttl": "2s", "refresh_ttl": "4s", "leeway": "0s"})
        authd.start()
        authd.stop()
        per_round, rounds = self.args.purge_jtis, self.args.purge_rounds
        log(f"purge: {rounds} rounds of {per_round} expired revocations seeded offline, "
            f"purged by authd (access_ttl=2s refresh_ttl=4s leeway=0s)")
        sizes, waits, ok = [du_kib(authd.data)], [], True
        for rnd in range(rounds):
            out = subprocess.run(
                [str(self.bin["seed"]), "fill", "--data", str(authd.data), "--users", "0",
                 "--revocations", str(per_round), "--revocation-ttl=-1",
                 "--memory-kib", str(CHEAP_ARGON2["argon2_memory_kib"]),
                 "--iterations", str(CHEAP_ARGON2["argon2_iterations"])],
                capture_output=True, text=True, timeout=600, check=False,
            )
            if out.returncode != 0:
                raise HarnessError(f"seeding expired entries failed:\n{out.stdout}\n{out.stderr}")
            authd.start()
            try:
                started = time.monotonic()
                admin = authd.admin()
                headers = authd.admin_headers()
                status, body = admin.request("GET", "/admin/v1/revocations?limit=1000", headers=headers)
                listed = len(json.loads(body)["revocations"]) if status == 200 else -1
                deadline = started + 60
                emptied = None
                while time.monotonic() < deadline:
                    status, body = admin.request("GET", "/admin/v1/revocations?limit=1", headers=headers)
                    if status != 200:
                        raise HarnessError(f"listing revocations: {status} {body[:200]!r}")
                    if not json.loads(body)["revocations"]:
                        emptied = time.monotonic() - started
                        break
                    time.sleep(0.05)
                admin.close()
            finally:
                authd.stop()
            size = du_kib(authd.data)
            sizes.append(size)
            waits.append(emptied)
            if emptied is None:
                ok = False
            log(f"purge round {rnd + 1}: {per_round} expired entries seeded ({listed} listed "
                f"at start), empty after "
                f"{'never (60 s)' if emptied is None else f'{emptied:.2f} s'}, du {size} KiB")
        # "Stops growing": sled grows its files for the first few MiB written, then reuses
        # them. So the last third of the rounds must not set a new high more than 10 %
        # above the highest size of the rounds before them.
        rounds_sizes = sizes[1:]
        tail = max(1, len(rounds_sizes) // 3)
        before = max(rounds_sizes[:-tail], default=sizes[0]) or 1
        growth = max(rounds_sizes[-tail:]) / before
        ok = ok and growth <= 1.10
        shown = " ".join(f"{s / 1024:.1f}" for s in rounds_sizes)
        wait_text = " ".join("never" if w is None else f"{w:.1f}" for w in waits)
        slowest = max((w for w in waits if w is not None), default=float("nan"))
        self.add(Figure(
            "purge", f"{slowest:.2f} s",
            f"to 0 entries; du tail x{growth:.2f} of earlier peak",
            "0 entries, du stops growing", verdict(ok),
            f"{rounds} x {per_round} jtis; du MiB per round {shown}; seconds to empty {wait_text}",
            {"wait_s": waits, "du_kib": sizes, "growth": growth},
        ))

    # ---- the revocation feed (issue 15)

    def run_feed_group(self) -> None:
        if not any(self.want(n) for n in FEED_FIGURES):
            return
        clients = self.args.feed_clients
        authd = Authd(
            self.bin["authd"], self.tmp / "feed", "feed (cheap argon2)",
            sections={
                # 1,000 streams plus wrk's 32 connections come from one address, 127.0.0.1.
                "server": {"max_connections_per_ip": 4096},
                "feed": {"enabled": True, "token_file": "data/feed.token", "max_clients": 2048},
            },
        )
        authd.start()
        log(f"authd (cheap argon2, feed.max_clients = 2048, server.max_connections_per_ip = 4096) "
            f"on {authd.url}")
        listener = FeedListener(self.bin["feed_load"], authd, clients, "bench-",
                                self.tmp / "feed_load.log")
        try:
            # The verify figure first, on an empty store: a stream opened without a cursor
            # first gets every revocation in force, and the delivery figure leaves thousands.
            if self.want("feed_verify_ratio"):
                self.feed_verify_ratio(authd, listener)
            if self.want("feed_delivery_p99"):
                self.feed_delivery(authd, listener)
        finally:
            listener.stop()
            authd.stop()

    def feed_clients_gauge(self, authd: Authd) -> float:
        """authd's own count of open feed requests (`authd_feed_clients` on /metrics)."""
        admin = authd.admin()
        status, body = admin.request("GET", "/metrics", headers=authd.admin_headers())
        admin.close()
        if status != 200:
            return float("nan")
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("authd_feed_clients"):
                return float(line.split()[-1])
        return float("nan")

    def feed_connect(self, authd: Authd, listener: FeedListener) -> None:
        rss_before = proc_status_kib(authd.proc.pid, "VmRSS")
        took = listener.start()
        # The daemon's gauge may trail the 200s by a moment: poll it with a deadline.
        deadline = time.monotonic() + 10
        gauge = self.feed_clients_gauge(authd)
        while gauge != listener.clients and time.monotonic() < deadline:
            time.sleep(0.05)
            gauge = self.feed_clients_gauge(authd)
        rss_after = proc_status_kib(authd.proc.pid, "VmRSS")
        if self.feed_rss is None:  # the first connect, to the fresh daemon: what the clients cost
            self.feed_rss = (rss_before, rss_after)
        log(f"feed: {listener.clients} SSE clients connected in {took:.2f} s (authd_feed_clients {gauge:.0f}); "
            f"authd VmRSS {rss_before / 1024:.1f} → {rss_after / 1024:.1f} MiB")
        if gauge != listener.clients:
            raise HarnessError(f"authd_feed_clients is {gauge}, expected {listener.clients}")

    def feed_verify_ratio(self, authd: Authd, listener: FeedListener) -> None:
        """verify_one (wrk -t2 -c32, one token) with and without the feed clients connected
        (idle: no revocations are made), each run a (floor, authd) pair per state, the states
        alternating (without, with / with, without, …) so each run's two pairs are measured
        within the same minute and the clients connect or leave once per run."""
        clients = listener.clients
        authd.create_user("bench")
        token = authd.login("bench")
        url = authd.url + "/v1/verify"
        wrk_kwargs = dict(connections=32, headers=[f"Authorization: Bearer {token}"])
        floor_url = self.ensure_floor().url + "/v1/verify"
        log(f"feed_verify_ratio: verify_one (wrk -t2 -c32, one token) without and with {clients} idle "
            f"feed clients connected")
        warm = min(2, self.args.duration)
        self.wrk.run(floor_url, duration=warm, **wrk_kwargs)
        self.wrk.run(url, duration=warm, **wrk_kwargs)
        runs = {"without": [], "with": []}
        floors = {"without": [], "with": []}
        ratios = {"without": [], "with": []}
        pair_ratios, problems = [], []
        for run in range(self.args.runs):
            states = ["without", "with"] if run % 2 == 0 else ["with", "without"]
            for state in states:
                if state == "with" and not listener.running:
                    self.feed_connect(authd, listener)
                elif state == "without" and listener.running:
                    listener.stop()
                order = [("floor", floor_url), ("authd", url)]
                if run % 2:
                    order.reverse()
                got = {who: self.wrk.run(target, **wrk_kwargs) for who, target in order}
                for who in ("floor", "authd"):
                    if got[who].problems():
                        problems.append(f"{state} {who}: {got[who].problems()}")
                floors[state].append(got["floor"].rps)
                runs[state].append(got["authd"].rps)
                ratios[state].append(got["authd"].rps / got["floor"].rps if got["floor"].rps else 0.0)
            pair_ratios.append(ratios["with"][-1] / ratios["without"][-1] if ratios["without"][-1] else 0.0)
            log(f"feed_verify_ratio run {run + 1}: without {runs['without'][-1]:,.0f}/s "
                f"({ratios['without'][-1]:.3f} x floor), with {runs['with'][-1]:,.0f}/s "
                f"({ratios['with'][-1]:.3f} x floor): {pair_ratios[-1]:.3f}")
        self.floor_samples += floors["without"] + floors["with"]
        value = median(pair_ratios)
        # The raw requests/s ratio of each run (no floor): what the floor's own noise hides.
        raw = [w / wo if wo else 0.0 for w, wo in zip(runs["with"], runs["without"])]
        ok = value >= 0.9 and not problems
        note = [f"run ratios {' '.join(f'{r:.3f}' for r in pair_ratios)}; raw with/without req/s "
                f"{' '.join(f'{r:.3f}' for r in raw)} (median {median(raw):.3f}); clients idle (no revocations)"]
        if clients != 1000:
            note.append(f"{clients} clients")
        self.add(Figure(
            "feed_verify_ratio", f"{value:.3f} x without",
            f"verify_one {median(runs['with']):,.0f} ({median(ratios['with']):.3f} x floor) with "
            f"{clients} feed clients / {median(runs['without']):,.0f} ({median(ratios['without']):.3f} x floor)",
            ">= 0.9 x without", verdict(ok), "; ".join(note + problems),
            {"ratio": value, "ratio_runs": pair_ratios, "raw_ratio_runs": raw, "with_rps": runs["with"], "without_rps": runs["without"],
             "with_floor_rps": floors["with"], "without_floor_rps": floors["without"],
             "with_vs_floor": ratios["with"], "without_vs_floor": ratios["without"]},
        ))

    def feed_delivery(self, authd: Authd, listener: FeedListener) -> None:
        """`--feed-clients` SSE clients connected while `feed_load revoke` makes `--feed-rate`
        jti revocations per second for `--feed-seconds`; per (event, client): the client's
        receive time minus the time the revoker had the POST's 200."""
        clients, rate, seconds = listener.clients, self.args.feed_rate, self.args.feed_seconds
        if not listener.running:
            self.feed_connect(authd, listener)
        rss_before, rss_connected = self.feed_rss
        pid = authd.proc.pid
        log(f"feed_delivery_p99: {clients} clients connected; {rate:g} revocations/s for {seconds:g} s "
            f"(admin POST on 8 keep-alive connections)")
        cpu0, load_cpu0, wall0 = proc_cpu_s(pid), proc_cpu_s(listener.proc.pid), time.monotonic()
        revoker = spawn(
            [str(self.bin["feed_load"]), "revoke", "--admin-url", f"http://127.0.0.1:{authd.admin_port}",
             "--admin-token-file", str(authd.data / "admin.token"), "--rate", str(rate),
             "--duration", str(seconds), "--connections", "8", "--prefix", "bench-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        try:
            out, err = revoker.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            stop(revoker, grace=2)
            raise HarnessError("feed_load revoke did not finish in time")
        with contextlib.suppress(ValueError):
            _children.remove(revoker)
        cpu1, load_cpu1, wall1 = proc_cpu_s(pid), proc_cpu_s(listener.proc.pid), time.monotonic()
        rss_end, hwm = proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "VmHWM")
        if revoker.returncode != 0:
            raise HarnessError(f"feed_load revoke failed ({revoker.returncode}): {err[-2000:]}")
        made = json.loads(out)
        requests = made["requests"]
        done = [r for r in requests if r["status"] == 200]
        refused = len(requests) - len(done)
        wait_ms = 5000  # a delivery not seen within 5 s of the revoker's end counts as missed
        summary = listener.finish(len(done), wait_ms)
        connected = summary["connected"]
        events = summary["events"]
        after_ok, after_send, worst_per_event, revoke_ms = [], [], [], []
        missed = 0
        for request in done:
            revoke_ms.append((request["ok_us"] - request["send_us"]) / 1000)
            seen = events.get(request["jti"])
            if seen is None:
                missed += connected
                worst_per_event.append(float("inf"))
                continue
            first = seen["first_us"]
            for offset in seen["offsets_us"]:
                after_ok.append((first + offset - request["ok_us"]) / 1000)
                after_send.append((first + offset - request["send_us"]) / 1000)
            missed += max(0, connected - seen["count"])
            worst_per_event.append((first + seen["offsets_us"][-1] - request["ok_us"]) / 1000
                                   if seen["count"] >= connected else float("inf"))
        # A missed delivery counts as the 5 s waited, so it lands in the tail.
        after_ok += [float(wait_ms)] * missed
        p50, p99, worst = median(after_ok), percentile(after_ok, 99), max(after_ok, default=float("nan"))
        cpu_share = (cpu1 - cpu0) / (wall1 - wall0)
        load_share = (load_cpu1 - load_cpu0) / (wall1 - wall0)
        sends = [r["send_us"] for r in done]
        span_s = (max(sends) - min(sends)) / 1e6 if len(sends) > 1 else 0.0
        achieved = (len(sends) - 1) / span_s if span_s else 0.0  # from the first POST to the last
        late_ms = [r["late_us"] / 1000 for r in requests]
        ok = p99 <= 1000 and not missed and not refused and not summary["dropped"]
        notes = [
            f"{len(done)} revocations at {achieved:.0f}/s (POSTs behind schedule p99 {percentile(late_ms, 99):.1f} ms) "
            f"× {connected} clients; "
            f"vs the POST's send p99 {percentile(after_send, 99):.1f} ms; per event last client p99 "
            f"{percentile(worst_per_event, 99):.1f} ms; POST p50 {median(revoke_ms):.1f} ms p99 "
            f"{percentile(revoke_ms, 99):.1f} ms",
            f"authd CPU {cpu_share * 100:.0f} % of a core while revoking; authd VmRSS {rss_before / 1024:.1f} MiB "
            f"fresh, {rss_connected / 1024:.1f} MiB once the {connected} clients first connected, "
            f"{rss_end / 1024:.1f} MiB after the revocations, VmHWM {hwm / 1024:.1f} MiB; "
            f"feed_load listen CPU {load_share * 100:.0f} % of a core",
        ]
        if missed:
            notes.append(f"{missed} deliveries missing after {wait_ms} ms")
        if refused:
            notes.append(f"{refused} revocations not answered 200")
        if summary["dropped"]:
            notes.append(f"streams ended early: {summary['dropped']}")
        self.add(Figure(
            "feed_delivery_p99", f"{p99:.1f} ms",
            f"p99 of {len(after_ok):,} (event, client) after the 200; p50 {p50:.1f} ms, max {worst:.1f} ms",
            "p99 <= 1000 ms", verdict(ok), "; ".join(notes),
            {"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "p99_after_send_ms": percentile(after_send, 99),
             "deliveries": len(after_ok), "missed": missed, "refused": refused, "revocations": len(done),
             "achieved_rate": achieved, "clients": connected, "authd_cpu_share": cpu_share,
             "listener_cpu_share": load_share, "rss_kib_without_clients": rss_before,
             "rss_kib_with_clients": rss_connected, "rss_kib_end": rss_end, "vm_hwm_kib": hwm,
             "revoke_p50_ms": median(revoke_ms), "connect_s": listener.connect_s},
        ))

    # ---- cluster mode on etcd (issue 13)

    def cluster_instances(self, etcd: EtcdCluster, label: str, prefix: str, count: int = 3,
                          password=None) -> list[Authd]:
        """`count` authd instances on the etcd cluster under `prefix`: the first one creates
        the deployment's secrets, which are copied to the others before they start."""
        instances = []
        for i in range(count):
            instances.append(Authd(
                self.bin["authd"], self.tmp / f"{label}{i + 1}", f"{label}{i + 1}",
                password=password, sections=etcd_sections(etcd, prefix),
            ))
        instances[0].start()
        for other in instances[1:]:
            copy_secrets(instances[0], other)
            other.start()
        log(f"{label}: {count} authd on etcd (prefix {prefix}) on "
            f"{', '.join(a.url for a in instances)}")
        return instances

    def run_cluster_group(self) -> None:
        if not any(self.want(n) for n in CLUSTER_FIGURES):
            return
        etcd_dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=self.args.etcd_dir)) if self.args.etcd_dir \
            else self.tmp / "etcd"
        etcd = EtcdCluster(etcd_dir)
        log(f"etcd: starting 3 members on {', '.join(ETCD_IPS)} (data in {etcd_dir})")
        etcd.start()
        instances: list[Authd] = []
        try:
            if self.want("cluster_propagation") or self.want("cluster_verify_ratio"):
                cheap = self.cluster_instances(etcd, "cheap", "/bench-cheap/")
                instances += cheap
                if self.want("cluster_propagation"):
                    self.cluster_propagation(cheap)
                if self.want("cluster_verify_ratio"):
                    self.cluster_verify_ratio(cheap[0])
                for authd in cheap:
                    authd.stop()
            if self.want("cluster_login_rps"):
                storm = self.cluster_instances(etcd, "storm", "/bench-storm/", password=DEFAULT_ARGON2)
                instances += storm
                self.cluster_login_rps(storm)
                for authd in storm:
                    authd.stop()
            if self.want("cluster_restart"):
                self.cluster_restart(etcd, instances)
        finally:
            # The instances first: a stopping instance still tells etcd that it leaves.
            for authd in instances:
                authd.stop()
            etcd.stop()
            if self.args.etcd_dir and not self.args.keep:
                shutil.rmtree(etcd_dir, ignore_errors=True)

    def cluster_propagation(self, instances: list[Authd]) -> None:
        a, b, c = instances
        n = self.args.trials
        log(f"cluster_propagation: {n} × (admin revoke of a session on A → 401 on B and C)")
        # login.max_sessions_per_user (100 by default) ends a user's oldest sessions: at most
        # 50 sessions per user.
        names = [f"prop{i:03d}" for i in range(-(-n // 50))]
        admin = a.admin()
        for name in names:
            a.create_user(name, admin)
        admin.close()
        public_a = a.public()
        tokens = [a.login(names[i % len(names)], public_a) for i in range(n)]
        public_a.close()
        pollers = [b.public(), c.public()]
        # Every token works on B and C first: the revocation must overturn a 200 each instance
        # has already given (and the session is in its view, not read from etcd on a miss).
        for token in tokens:
            bearer = {"Authorization": f"Bearer {token}"}
            for who, client in zip("BC", pollers):
                deadline = time.monotonic() + 5
                while True:
                    status, _ = client.request("GET", "/v1/verify", headers=bearer)
                    if status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise HarnessError(f"a fresh token from A answers {status} on {who}")
                    time.sleep(0.01)
        admin = a.admin()
        headers = a.admin_headers()
        totals, revoke_ms, missed = [], [], 0
        limit = 5.0  # seconds: a trial that takes longer counts as missed (and as 5 s)
        for token in tokens:
            sid = jwt_claims(token)["sid"]
            bearer = {"Authorization": f"Bearer {token}"}
            sent = time.perf_counter()
            status, body = admin.request("POST", "/admin/v1/revocations", {"sid": sid}, headers,
                                         retry=False)
            answered = time.perf_counter()
            if status != 200:
                raise HarnessError(f"revocation of a session refused: {status} {body[:200]!r}")
            revoke_ms.append((answered - sent) * 1000)
            # Poll B and C in turn, each on its keep-alive connection, until both say 401.
            pending = {0, 1}
            seen = answered
            while pending and time.perf_counter() - answered < limit:
                for i in list(pending):
                    status, _ = pollers[i].request("GET", "/v1/verify", headers=bearer, retry=False)
                    if status == 401:
                        pending.discard(i)
                        seen = time.perf_counter()
                    elif status != 200:
                        raise HarnessError(f"verify answered {status} during propagation")
            if pending:
                missed += 1
                totals.append(limit * 1000)
            else:
                totals.append((seen - answered) * 1000)
        admin.close()
        for client in pollers:
            client.close()
        p50, p99, worst = median(totals), percentile(totals, 99), max(totals)
        ok = p99 <= 250 and not missed
        note = f"n={n}; the admin revoke itself p50 {median(revoke_ms):.1f} ms"
        if missed:
            note += f"; {missed} trials not 401 on both within {limit:.0f} s"
        self.add(Figure(
            "cluster_propagation", f"{p99:.1f} ms",
            f"p99; p50 {p50:.1f} ms, max {worst:.1f} ms (revoke on A → 401 on B, C)",
            "p99 <= 250 ms", verdict(ok), note,
            {"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "samples_ms": totals,
             "revoke_ms": revoke_ms, "missed": missed},
        ))

    def cluster_verify_ratio(self, on_etcd: Authd) -> None:
        """verify_one on an etcd-backed instance and on a sled one, alternating (ABBA) in
        one run: the ratio of each pair, median over the runs."""
        sled = Authd(self.bin["authd"], self.tmp / "ratio-sled", "ratio-sled")
        sled.start()
        try:
            targets = {}
            for who, authd in (("etcd", on_etcd), ("sled", sled)):
                authd.create_user("ratio")
                token = authd.login("ratio")
                targets[who] = (authd.url + "/v1/verify", [f"Authorization: Bearer {token}"])
            log("cluster_verify_ratio: verify_one (wrk -t2 -c32, one token) on etcd and on sled")
            warm = min(2, self.args.duration)
            for who, (url, headers) in targets.items():
                self.wrk.run(url, duration=warm, connections=32, headers=headers)
            runs = {"etcd": [], "sled": []}
            ratios, problems = [], []
            for run in range(self.args.runs):
                order = ["etcd", "sled"] if run % 2 == 0 else ["sled", "etcd"]
                got = {}
                for who in order:
                    url, headers = targets[who]
                    got[who] = self.wrk.run(url, connections=32, headers=headers)
                    runs[who].append(got[who].rps)
                    if got[who].problems():
                        problems.append(f"{who}: {got[who].problems()}")
                ratios.append(got["etcd"].rps / got["sled"].rps if got["sled"].rps else 0.0)
                log(f"cluster_verify_ratio run {run + 1}: etcd {got['etcd'].rps:,.0f}/s, "
                    f"sled {got['sled'].rps:,.0f}/s, ratio {ratios[-1]:.3f}")
            ratio = median(ratios)
            self.add(Figure(
                "cluster_verify_ratio", f"{ratio:.3f} x sled",
                f"verify_one etcd {median(runs['etcd']):,.0f} / sled {median(runs['sled']):,.0f} req/s",
                ">= 0.95 x sled", verdict(ratio >= 0.95 and not problems),
                "; ".join([f"pair ratios {' '.join(f'{r:.3f}' for r in ratios)}"] + problems),
                {"ratio": ratio, "ratio_runs": ratios, "etcd_runs": runs["etcd"], "sled_runs": runs["sled"]},
            ))
        finally:
            sled.stop()

    def cluster_login_rps(self, instances: list[Authd]) -> None:
        hash_ms = self.hash_time()
        bound = self.cores / (hash_ms / 1000)
        # One user per instance (`--login-user shared`: one user for all three). Every login
        # commits a session under its user's session cap (login.max_sessions_per_user), so
        # one user's logins on three instances at once meet as etcd conflicts.
        shared = self.args.login_user == "shared"
        names = ["storm"] * len(instances) if shared else [f"storm{i + 1}" for i in range(len(instances))]
        for name in sorted(set(names)):
            instances[0].create_user(name)
        for authd, name in zip(instances, names):  # each logs in before the clock starts
            authd.login(name)
        # 66 connections in all, as close to the single-instance login_rps' 64 as three
        # equal shares get; one wrk thread per instance.
        storm_args = dict(threads=1, connections=22, script="login.lua", timeout="20s")
        urls = [authd.url + "/v1/login" for authd in instances]
        log(f"cluster_login_rps: wrk -t1 -c22 on /v1/login of each of {len(urls)} instances at once "
            f"({'one user for all' if shared else 'one user per instance'}); "
            f"bound {self.cores} cores / {hash_ms:.1f} ms = {bound:.1f}/s")

        def storm(duration):
            procs = [self.wrk.start(url, duration=duration, script_args=[name, PASSWORD], **storm_args)
                     for url, name in zip(urls, names)]
            return [self.wrk.finish(proc, timeout=duration + 60) for proc in procs]

        storm(min(2, self.args.duration))
        runs, problems = [], []
        for run in range(self.args.runs):
            results = storm(self.args.duration)
            total = sum(result.rps for result in results)
            runs.append(total)
            problems += [f"instance {i + 1}: {r.problems()}" for i, r in enumerate(results) if r.problems()]
            log(f"cluster_login_rps run {run + 1}: {total:.1f}/s "
                f"({' + '.join(f'{r.rps:.1f}' for r in results)})")
        rps = median(runs)
        ratio = rps / bound
        self.add(Figure(
            "cluster_login_rps", f"{rps:,.1f} req/s",
            f"{ratio:.3f} x bound ({self.cores} / {hash_ms:.1f} ms = {bound:.1f}/s), 3 instances",
            ">= 0.8 x bound", verdict(ratio >= 0.8 and not problems),
            "; ".join([f"runs {' '.join(f'{r:.1f}' for r in runs)}/s"
                       + ("; one user on all instances" if shared else "")] + problems),
            {"rps": rps, "runs": runs, "hash_ms": hash_ms, "bound": bound, "ratio": ratio},
        ))

    def cluster_restart(self, etcd: EtcdCluster, instances: list[Authd]) -> None:
        users, revocations = self.args.users, self.args.revocations
        prefix = "/bench/"
        log(f"cluster_restart: seeding etcd under {prefix} with {users:,} users and "
            f"{revocations:,} revoked jtis (examples/seed.rs fill --etcd)")
        started = time.monotonic()
        out = subprocess.run(
            [str(self.bin["seed"]), "fill", "--etcd", ",".join(etcd.endpoints), "--prefix", prefix,
             "--users", str(users), "--revocations", str(revocations), "--password", PASSWORD,
             "--memory-kib", str(CHEAP_ARGON2["argon2_memory_kib"]),
             "--iterations", str(CHEAP_ARGON2["argon2_iterations"])],
            capture_output=True, text=True, timeout=3600, check=False,
        )
        seed_s = time.monotonic() - started
        if out.returncode != 0:
            raise HarnessError(f"seeding etcd failed:\n{out.stdout}\n{out.stderr}")
        facts = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        db_mib = etcd.db_size_mib()
        log(f"cluster_restart: seeded in {seed_s:.1f} s (users {facts.get('users_s')} s, revocations "
            f"{facts.get('revocations_s')} s = {facts.get('revocations_per_s')}/s), etcd db {db_mib:.0f} MiB")
        authd = Authd(self.bin["authd"], self.tmp / "restart", "restart",
                      sections=etcd_sections(etcd, prefix))
        instances.append(authd)
        authd.start(timeout=600)
        log(f"cluster_restart: first start (creates the deployment's secrets) ready in "
            f"{authd.first_start_s:.2f} s")
        # The instance really has the seeded data: a seeded user logs in, revocations list.
        authd.login("user000000")
        admin = authd.admin()
        status, body = admin.request("GET", "/admin/v1/revocations?limit=1", headers=authd.admin_headers())
        admin.close()
        if status != 200 or not json.loads(body)["revocations"]:
            raise HarnessError(f"the seeded revocations are not listed: {status} {body[:200]!r}")
        times = []
        for run in range(self.args.runs):
            authd.stop()
            times.append(authd.start(timeout=600))
            log(f"cluster_restart run {run + 1}: {times[-1]:.3f} s")
        value = median(times)
        note = (f"restarts {', '.join(f'{t:.2f}' for t in times)} s; first start {authd.first_start_s:.2f} s; "
                f"seeding {seed_s:.0f} s (users {float(facts.get('users_s', 'nan')):.0f} s, revocations "
                f"{float(facts.get('revocations_s', 'nan')):.0f} s); etcd db {db_mib:.0f} MiB")
        if (users, revocations) != (100_000, 1_000_000):
            note += f"; {revocations:,} revocations, {users:,} users"
        self.add(Figure(
            "cluster_restart", f"{value:.3f} s", "spawn → first /readyz 200, etcd-backed",
            "", "", note,
            {"restarts_s": times, "first_start_s": authd.first_start_s, "seed_s": seed_s,
             "seed_facts": facts, "etcd_db_mib": db_mib},
        ))

    def finish(self) -> list[Figure]:
        if self.floor_samples:
            self.results["floor"] = Figure(
                "floor", f"{median(self.floor_samples):,.0f} req/s",
                f"median of {len(self.floor_samples)} (min {min(self.floor_samples):,.0f}, "
                f"max {max(self.floor_samples):,.0f})",
                "", "", "bare warp route, same wrk request as each figure",
                {"runs": self.floor_samples},
            )
        return [self.results[n] for n in FIGURES if n in self.results]


def du_kib(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


# --------------------------------------------------------------------------------------


def build(args) -> dict:
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    profile = "debug" if args.debug_build else "release"
    target = Path(json.loads(meta.stdout)["target_directory"]) / profile
    binaries = {
        "authd": target / "authd",
        "floor": target / "examples" / "floor",
        "seed": target / "examples" / "seed",
        "feed_load": target / "examples" / "feed_load",
    }
    if not args.no_build:
        cmd = ["cargo", "build", "--bin", "authd", "--example", "floor", "--example", "seed",
               "--example", "feed_load"]
        if not args.debug_build:
            cmd.insert(2, "--release")
        log(" ".join(cmd))
        started = time.monotonic()
        result = subprocess.run(cmd, cwd=ROOT, timeout=3600)
        if result.returncode != 0:
            raise HarnessError("cargo build failed")
        log(f"build done in {time.monotonic() - started:.0f} s")
    for name, path in binaries.items():
        if name == "feed_load" and not args.selected & set(FEED_FIGURES):
            continue  # only the feed figures use it (CI's debug run may not have it)
        if not path.exists():
            raise HarnessError(f"{path} is missing (run without --no-build)")
    return binaries


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="authd benchmark harness (issue 6). One line per figure on stdout; "
        "progress on stderr.",
    )
    p.add_argument("--quick", action="store_true",
                   help="short smoke run for CI: 2 s per wrk, 1 run, smaller seeds")
    p.add_argument("--only", default="",
                   help=f"comma-separated figures to run (prerequisites are added): {', '.join(FIGURES[1:])}; "
                   "`cluster` names the four cluster_* figures (not part of the default run: they need etcd); "
                   "`feed` names the two feed_* figures (not part of the default run)")
    p.add_argument("--runs", type=int, help="runs per figure, medians reported (default 3; quick 1)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 5; quick 2)")
    p.add_argument("--tokens", type=int, help="distinct tokens for verify_10k (default 10000; quick 1000)")
    p.add_argument("--users", type=int, help="seeded users (default 100000; quick 10000)")
    p.add_argument("--revocations", type=int, help="seeded revoked jtis (default 1000000; quick 100000)")
    p.add_argument("--revoke-samples", type=int, help="revoke_visible samples (default 200; quick 50)")
    p.add_argument("--trials", type=int, help="cluster_propagation trials (default 200; quick 50)")
    p.add_argument("--login-user", choices=["per-instance", "shared"], default="per-instance",
                   help="cluster_login_rps: one user per instance (default) or one user for all three")
    p.add_argument("--etcd-dir", metavar="DIR",
                   help="where the etcd members keep their data (default: the work folder); the "
                   "seeded cluster_restart needs a few GiB")
    p.add_argument("--feed-clients", type=int, default=1000,
                   help="feed figures: concurrent SSE clients (default 1000)")
    p.add_argument("--feed-rate", type=float, default=200.0,
                   help="feed_delivery_p99: revocations per second (default 200)")
    p.add_argument("--feed-seconds", type=float,
                   help="feed_delivery_p99: seconds of revocations (default 10; quick 5)")
    p.add_argument("--purge-jtis", type=int, help="revocations per purge round (default 1000)")
    p.add_argument("--purge-rounds", type=int, help="purge rounds (default 9; quick 8)")
    p.add_argument("--client-threads", type=int, default=8,
                   help="concurrent Python clients making tokens and revocations (default 8)")
    p.add_argument("--seed-cache", metavar="DIR",
                   help="keep the seeded store in DIR and reuse it while the seeder binary is unchanged")
    p.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    p.add_argument("--debug-build", action="store_true",
                   help="use the debug binaries (those `cargo test` builds): checks that the harness "
                   "works, e.g. in CI; the figures mean nothing")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs, data)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a figure FAILs")
    args = p.parse_args(argv)
    defaults = dict(runs=(1, 3), duration=(2, 5), tokens=(1000, 10_000), users=(10_000, 100_000),
                    revocations=(100_000, 1_000_000), revoke_samples=(50, 200), trials=(50, 200),
                    purge_jtis=(1000, 1000), purge_rounds=(8, 9), feed_seconds=(5.0, 10.0))
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if min(args.runs, args.duration, args.tokens, args.purge_rounds, args.client_threads, args.trials,
           args.feed_clients) < 1:
        p.error("--runs, --duration, --tokens, --purge-rounds, --client-threads, --trials and "
                "--feed-clients must be at least 1")
    if args.feed_rate <= 0 or args.feed_seconds <= 0:
        p.error("--feed-rate and --feed-seconds must be positive")
    selected = {n.strip() for n in args.only.split(",") if n.strip()}
    if "cluster" in selected:
        selected = (selected - {"cluster"}) | set(CLUSTER_FIGURES)
    if "feed" in selected:
        selected = (selected - {"feed"}) | set(FEED_FIGURES)
    selected = selected or set(FIGURES[1:]) - set(CLUSTER_FIGURES) - set(FEED_FIGURES)
    unknown = selected - set(FIGURES)
    if unknown:
        p.error(f"unknown figure(s): {', '.join(sorted(unknown))}; known: {', '.join(FIGURES[1:])}")
    for name in list(selected):
        selected |= NEEDS.get(name, set())
    args.selected = selected
    return args


def main(argv) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench/run: wrk is not installed (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="authd-bench-"))
    started = time.monotonic()
    figures: list[Figure] = []
    bench = None
    try:
        binaries = build(args)
        log(f"work folder {tmp}; {len(os.sched_getaffinity(0))} cores; runs={args.runs}, "
            f"{args.duration} s per wrk run")
        bench = Bench(args, tmp, binaries)
        bench.guarded(bench.run_cheap_group, ["verify_one", "verify_10k", "revoke_visible_p99"])
        bench.guarded(bench.run_seeded_group, SEEDED_FIGURES)
        bench.guarded(bench.run_storm_group, ["login_rps", "verify_p99_storm", "login_peak_rss"])
        bench.guarded(bench.run_purge, ["purge"])
        bench.guarded(bench.run_feed_group, FEED_FIGURES)
        bench.guarded(bench.run_cluster_group, CLUSTER_FIGURES)
        figures = bench.finish()
    except KeyboardInterrupt as err:
        log(f"interrupted ({err or 'SIGINT'}): stopping")
        return 130
    except (HarnessError, subprocess.SubprocessError, OSError) as err:
        log(f"error: {err}")
        if bench is not None:
            figures = bench.finish()
            for figure in figures:
                print(figure.line(), flush=True)
        return 1
    finally:
        stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"done in {time.monotonic() - started:.0f} s")
    mode = "quick" if args.quick else "full"
    if args.debug_build:
        mode += ", DEBUG binaries: the figures mean nothing"
    print(f"# authd bench ({mode}: runs={args.runs}, {args.duration} s per wrk run, "
          f"{len(os.sched_getaffinity(0))} cores, {time.strftime('%Y-%m-%d %H:%M:%S')})")
    for figure in figures:
        print(figure.line(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"mode": mode, "runs": args.runs, "duration_s": args.duration,
             "figures": [figure.__dict__ for figure in figures]},
            indent=2, default=str) + "\n")
    failed = [f.name for f in figures if f.verdict == "FAIL"]
    if bench.errors:
        return 1
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
