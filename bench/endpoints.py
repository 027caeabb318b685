"""Endpoint benchmark: the real processes (gunicorn web, RQ workers, Redis) on loopback.

    .venv/bin/python bench/endpoints.py [--calls 2000] [--workers 2] [--concurrency 16]

Prints, from one run: latency of sequential calls to a trivial endpoint script and to a
bare route on the same server (the overhead ratio and the added milliseconds), and the
throughput with concurrent connections, with errors and recorded executions counted.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import WorkerProcess, free_port, redis_server, wait_for_port
from webapp import create_app
from webapp.auth.tokens import create_token
from webapp.config import Settings
from webapp.extensions import db
from webapp.models import Execution, Membership, Tenant, User
from webapp.scripts.service import create_script


def _setup(database_url: str, redis_url: str) -> str:
    app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
    with app.app_context():
        db.create_all()
        tenant, user = Tenant(name="bench"), User(email="b@bench.io", password_hash="x")
        db.session.add_all([tenant, user, Membership(user=user, tenant=tenant, role="admin")])
        db.session.commit()
        with app.test_request_context():
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
        return create_token(tenant, user, "bench")[1]


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


def _throughput(url: str, headers: dict, calls: int, concurrency: int) -> tuple[float, int]:
    def worker(n: int) -> int:
        session, errors = requests.Session(), 0
        for _ in range(n):
            try:
                if session.get(url, headers=headers, timeout=30).status_code != 200:
                    errors += 1
            except requests.RequestException:
                errors += 1
        return errors

    shares = [calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        errors = sum(pool.map(worker, shares))
    return calls / (time.perf_counter() - started), errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        token = _setup(database_url, redis_url)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "bench"}
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
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
            rate, errors = _throughput(f"{base}/api/scripts/ping", headers, args.calls, args.concurrency)
            bare_rate, bare_errors = _throughput(f"{base}/healthz", {}, args.calls, args.concurrency)
            time.sleep(1)
            app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
            with app.app_context():
                recorded = db.session.scalar(
                    db.select(db.func.count()).select_from(Execution).where(Execution.status == "succeeded")
                )
        finally:
            for worker in workers:
                worker.stop()
            web.terminate()
            web.wait(timeout=20)
    expected = 50 + 2 * args.calls
    print(f"## Trivial endpoint vs. a bare route, gunicorn (2 processes × 16 threads), {args.workers} workers\n")
    print(f"Sequential calls ({args.calls} each), latency in ms:\n")
    print("| route | p50 | p99 |")
    print("| --- | ---: | ---: |")
    print(f"| bare route (`/healthz`: one DB and one Redis query) | {_pct(bare, 50):.2f} | {_pct(bare, 99):.2f} |")
    print(f"| endpoint script (`/api/scripts/ping`) | {_pct(endpoint, 50):.2f} | {_pct(endpoint, 99):.2f} |")
    print(
        f"\nAdded p50 {_pct(endpoint, 50) - _pct(bare, 50):.2f} ms, ratio {_pct(endpoint, 50) / _pct(bare, 50):.1f}×.\n"
    )
    print(f"{args.concurrency} concurrent connections, {args.calls} calls each:\n")
    print("| route | calls/s | errors |")
    print("| --- | ---: | ---: |")
    print(f"| bare route | {bare_rate:.0f} | {bare_errors} |")
    print(f"| endpoint script | {rate:.0f} | {errors} |")
    print(f"\nEndpoint executions recorded as succeeded: {recorded} of {expected} calls.")


if __name__ == "__main__":
    main()
