"""What the endpoint benchmarks share: the real processes on loopback (Redis, SQLite, gunicorn
as the Procfile runs it, RQ workers), their endpoint scripts, and the measures: sequential
latency from a Python client, throughput with wrk, CPU time per process from /proc/<pid>/stat.

Not a benchmark itself: `make bench` runs the bench/*.py files whose names do not start with _.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent

from tests.services import SINGLE_TENANT_LOAD, RedisProcess, WorkerProcess, admin_token, free_port, wait_for_port
from webapp.app import create_app
from webapp.config import Settings
from webapp.extensions import db
from webapp.models import Script, ScriptVersion, Tenant, User, utcnow
from webapp.scripts.service import create_script

PING = "function main() { return { body: { ok: true } } }"  # the trivial endpoint script
CRON_SOURCE = "function main(event) { return event.scheduled_at }"


@dataclass
class Stack:
    base: str  # http://127.0.0.1:<port> of the web process
    headers: dict[str, str]  # the admin token's Authorization header
    database_url: str
    redis: RedisProcess
    web: subprocess.Popen
    workers: list[WorkerProcess]
    script_ids: dict[str, uuid.UUID]  # the scripts `stack` made, by name

    def app(self):
        return create_app(replace(Settings.from_env(), database_url=self.database_url, redis_url=self.redis.url))

    def process_groups(self) -> dict[str, list[int]]:
        """The pids of each kind of process; gunicorn's and the sandboxes are there once warmed up."""
        return {
            "web (gunicorn)": with_children(self.web.pid),
            "workers": [w.proc.pid for w in self.workers],
            "sandboxes": [pid for w in self.workers for pid in with_children(w.proc.pid)[1:]],
            "Redis": [self.redis.proc.pid],
        }


def _create_scripts(database_url: str, redis_url: str, endpoints: dict[str, str], manual: dict[str, str]):
    """A tenant, its admin, one GET endpoint script per name in `endpoints` (path /<name>) and a
    manual script per name in `manual`; the admin's token and the scripts' ids by name."""
    app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
    token = admin_token(app)
    with app.app_context(), app.test_request_context():
        tenant, user = db.session.scalar(db.select(Tenant)), db.session.scalar(db.select(User))
        made = {}
        for name, source in endpoints.items():
            fields = {"name": name, "type": "endpoint", "endpoint_method": "GET", "endpoint_path": f"/{name}"}
            made[name] = create_script(tenant, user, {**fields, "source": source}).id
        for name, source in manual.items():
            made[name] = create_script(tenant, user, {"name": name, "type": "manual", "source": source}).id
    return token, made


def create_cron_scripts(app, count: int, expression: str, tenant_name: str = "bench") -> list[uuid.UUID]:
    """`count` active cron scripts of a new tenant, inserted in bulk (no quota, no audit entry);
    a scheduler's first reconcile adds them to the schedule."""
    with app.app_context():
        tenant = Tenant(name=tenant_name)
        db.session.add(tenant)
        db.session.flush()
        now, ids, scripts, versions = utcnow(), [], [], []
        for i in range(count):
            script_id = uuid.uuid4()
            ids.append(script_id)
            common = {
                "type": "cron",
                "source": CRON_SOURCE,
                "cron_expression": expression,
                "timezone": "UTC",
                "misfire_policy": "run_once",
            }
            scripts.append(
                {
                    "id": script_id,
                    "tenant_id": tenant.id,
                    "name": f"s{i}",
                    "description": "",
                    "status": "active",
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                    **common,
                }
            )
            versions.append({"script_id": script_id, "version": 1, "created_at": now, **common})
        db.session.execute(db.insert(Script), scripts)
        db.session.execute(db.insert(ScriptVersion), versions)
        db.session.commit()
    return ids


@contextmanager
def stack(
    endpoints: dict[str, str], workers: int, env: dict[str, str] | None = None, manual: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Redis, a SQLite database with the endpoint (and `manual`) scripts, gunicorn (2 processes
    × 16 threads) and `workers` RQ workers; `env` goes to the web process and the workers."""
    extra = env or {}
    redis = RedisProcess().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            database_url = f"sqlite:///{tmp}/bench.db"
            token, script_ids = _create_scripts(database_url, redis.url, endpoints, manual or {})
            port = free_port()
            # One tenant drives every connection: the cap of runs in flight per tenant is off.
            web_env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis.url, "SECRET_KEY": "bench"}
            web_env.update(SINGLE_TENANT_LOAD)
            web_env.update(extra)
            web = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    "gunicorn.conf.py",  # as the Procfile: HTTP metrics across the processes
                    "wsgi:app",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--worker-class",
                    "gthread",
                    "--workers",
                    "2",
                    "--threads",
                    "16",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=web_env,
            )
            started = [WorkerProcess(database_url, redis.url, **extra).start() for _ in range(workers)]
            try:
                wait_for_port(port)
                headers = {"Authorization": f"Bearer {token}"}
                yield Stack(f"http://127.0.0.1:{port}", headers, database_url, redis, web, started, script_ids)
            finally:
                for worker in started:
                    worker.stop()
                web.terminate()
                web.wait(timeout=20)
    finally:
        redis.close()


def latencies(url: str, headers: dict, calls: int) -> list[float]:
    """`calls` sequential GETs on one keep-alive session, in ms; each must answer 200."""
    session = requests.Session()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=30)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return out


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Wrk:
    rate: float  # calls/s
    calls: int
    errors: int  # non-2xx answers and socket errors
    p50_ms: float  # latency under load
    p99_ms: float


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_percentile(out: str, q: int) -> float:
    found = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    return float(found.group(1)) * _UNIT_MS[found.group(2)]


# A wrk script for POSTs of a JSON body; it also counts the 2xx and 3xx answers other than 200
# (wrk counts 4xx and 5xx only): a run API answer of 202 is a run that did not finish in time.
_POST = """wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) other = 0 end
function response(status, headers, body) if status ~= 200 and status < 400 then other = other + 1 end end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("other") end
  io.write(string.format("Other 2xx or 3xx: %%d\\n", n))
end
"""


def throughput(url: str, headers: dict, seconds: int, concurrency: int, post: str | None = None) -> Wrk:
    """wrk for `seconds` with `concurrency` connections (--latency only prints what it records);
    GETs, or POSTs of the JSON `post` for which an answer other than 200 is an error."""
    command = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if post is not None:
            script.write(_POST % post)
            script.flush()
            command += ["-s", script.name]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    calls = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    counted = [r"Non-2xx or 3xx responses: (\d+)", r"Other 2xx or 3xx: (\d+)"]
    errors = sum(int(found.group(1)) for pattern in counted if (found := re.search(pattern, out)))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(map(int, socket.groups())) if socket else 0
    return Wrk(rate, calls, errors, _wrk_percentile(out, 50), _wrk_percentile(out, 99))


def context_switches() -> int:
    """Context switches since boot, machine-wide (`ctxt` in /proc/stat)."""
    with open("/proc/stat") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("ctxt "))


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    except (FileNotFoundError, StopIteration):  # gone, or a zombie
        return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_totals(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(map(cpu_seconds, pids)) for name, pids in groups.items()}


def with_children(pid: int) -> list[int]:
    found = [pid]
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        found += with_children(int(child))
    return found
