"""Endpoint benchmark: the real processes (gunicorn web, RQ workers, Redis) on loopback.

    .venv/bin/python bench/endpoints.py [--calls 2000] [--workers 2] [--concurrency 16]

Prints, from one run: latency of sequential calls to a trivial endpoint script and to a
bare route on the same server (the overhead ratio and the added milliseconds), and the
throughput with concurrent connections measured by wrk (as the peers in FIELD-NOTES were:
a Python client would take a core of the two for itself), with errors and recorded
executions counted, and the CPU time each kind of process spent per call meanwhile (from
/proc/<pid>/stat): on a CPU-bound machine, calls/s is the cores over the sum.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import SINGLE_TENANT_LOAD, RedisProcess, WorkerProcess, admin_token, free_port, wait_for_port
from webapp.app import create_app
from webapp.config import Settings
from webapp.extensions import db
from webapp.models import Execution, Tenant, User
from webapp.scripts.service import create_script


def _setup(database_url: str, redis_url: str) -> str:
    app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
    token = admin_token(app)
    with app.app_context(), app.test_request_context():
        tenant, user = db.session.scalar(db.select(Tenant)), db.session.scalar(db.select(User))
        create_script(
            tenant,
            user,
            {
                "name": "ping",
                "type": "endpoint",
                "endpoint_method": "GET",
                "endpoint_path": "/ping",
                "source": "function main() { return { body: { ok: true } } }",
            },
        )
    return token


def _latencies(url: str, headers: dict, calls: int) -> list[float]:
    session = requests.Session()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=30)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return out


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _throughput(url: str, headers: dict, seconds: int, concurrency: int) -> tuple[float, int, int]:
    """wrk for `seconds`: (calls/s, calls, errors: non-2xx answers and socket errors)."""
    command = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    calls = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return rate, calls, errors


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_children(pid: int) -> list[int]:
    found = [pid]
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        found += _with_children(int(child))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per route")
    parser.add_argument("--seconds", type=int, default=10, help="wrk run per route")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    redis = RedisProcess().start()
    redis_url = redis.url
    try:
        with tempfile.TemporaryDirectory() as tmp:
            database_url = f"sqlite:///{tmp}/bench.db"
            token = _setup(database_url, redis_url)
            port = free_port()
            # One tenant drives every connection: the cap of runs in flight per tenant is off.
            env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "bench"}
            env.update(SINGLE_TENANT_LOAD)
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
                env=env,
            )
            workers = [WorkerProcess(database_url, redis_url).start() for _ in range(args.workers)]
            try:
                wait_for_port(port)
                base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
                _latencies(f"{base}/api/scripts/ping", headers, 50)  # warm up
                bare = _latencies(f"{base}/healthz", {}, args.calls)
                endpoint = _latencies(f"{base}/api/scripts/ping", headers, args.calls)
                groups = {
                    "web (gunicorn)": _with_children(web.pid),
                    "workers": [w.proc.pid for w in workers],
                    "sandboxes": [pid for w in workers for pid in _with_children(w.proc.pid)[1:]],
                    "Redis": [redis.proc.pid],
                }
                before = {name: sum(map(_cpu_seconds, pids)) for name, pids in groups.items()}
                rate, calls, errors = _throughput(f"{base}/api/scripts/ping", headers, args.seconds, args.concurrency)
                cpu = {name: (sum(map(_cpu_seconds, pids)) - before[name]) / calls for name, pids in groups.items()}
                bare_rate, _, bare_errors = _throughput(f"{base}/healthz", {}, args.seconds, args.concurrency)
                expected = 50 + args.calls + calls
                app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
                with app.app_context():
                    deadline = time.monotonic() + 10  # successful calls are recorded just after their answer
                    while True:
                        recorded = db.session.scalar(
                            db.select(db.func.count()).select_from(Execution).where(Execution.status == "succeeded")
                        )
                        db.session.rollback()
                        if recorded >= expected or time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
            finally:
                for worker in workers:
                    worker.stop()
                web.terminate()
                web.wait(timeout=20)
    finally:
        redis.close()
    print(f"## Trivial endpoint vs. a bare route, gunicorn (2 processes × 16 threads), {args.workers} workers\n")
    print(f"Sequential calls ({args.calls} each), latency in ms:\n")
    print("| route | p50 | p99 |")
    print("| --- | ---: | ---: |")
    print(f"| bare route (`/healthz`: one DB and one Redis query) | {_pct(bare, 50):.2f} | {_pct(bare, 99):.2f} |")
    print(f"| endpoint script (`/api/scripts/ping`) | {_pct(endpoint, 50):.2f} | {_pct(endpoint, 99):.2f} |")
    print(
        f"\nAdded p50 {_pct(endpoint, 50) - _pct(bare, 50):.2f} ms, ratio {_pct(endpoint, 50) / _pct(bare, 50):.1f}×.\n"
    )
    print(f"wrk, 2 threads, {args.concurrency} connections, {args.seconds} s per route:\n")
    print("| route | calls/s | errors |")
    print("| --- | ---: | ---: |")
    print(f"| bare route | {bare_rate:.0f} | {bare_errors} |")
    print(f"| endpoint script | {rate:.0f} | {errors} |")
    print(
        f"\nEndpoint executions recorded as succeeded: {recorded}, for {expected} answered calls "
        f"(wrk stops with up to {args.concurrency} calls in flight: they run and are recorded too)."
    )
    print("\nCPU time per endpoint call during its wrk run:\n")
    print("| processes | ms per call |")
    print("| --- | ---: |")
    for name, seconds in cpu.items():
        print(f"| {name} | {seconds * 1000:.2f} |")
    print(f"| all of them | {sum(cpu.values()) * 1000:.2f} |")


if __name__ == "__main__":
    main()
