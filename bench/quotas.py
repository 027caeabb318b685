"""Storage quota benchmark: what counting usage costs the hot paths, against what a SUM over a
tenant's executions on every write would cost (docs/architecture.md, Quotas).

    .venv/bin/python bench/quotas.py [--writes 2000] [--executions 100000]

In-process, on SQLite and on a private PostgreSQL: `storage.set` through the worker's HostApi,
and a run's outcome written as worker/jobs.py writes it, each with the counter and with the
counting switched off (quotas.add patched to a no-op); then SUM(stored_bytes) over one tenant's
executions, and the upkeep's recount of every tenant.
"""

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select

from tests.services import postgres_server, redis_server
from webapp import quotas
from webapp.app import create_app
from webapp.config import Settings
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, Tenant, utcnow
from worker import jobs
from worker.host_api import HostApi

LOGS_SMALL = [{"time": "2026-12-07T10:00:00.000Z", "level": "log", "message": "done in 12 ms"}]
LOGS_CAP = [{"time": "2026-12-07T10:00:00.000Z", "level": "log", "message": "x" * (256 * 1024 - 48)}]


def _app(database_url: str, redis_url: str):
    settings = replace(Settings.from_env(), database_url=database_url, redis_url=redis_url, secret_key="bench")
    app = create_app(settings)
    with app.app_context():
        db.drop_all()
        db.create_all()
    return app


def _tenant_with_script() -> tuple[int, uuid.UUID]:
    tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
    script = Script(tenant=tenant, name="s", type="manual", source="function main(){}", version=1)
    script.versions.append(ScriptVersion(version=1, type="manual", source=script.source, timezone="UTC"))
    db.session.add(script)
    db.session.commit()
    return tenant.id, script.id


@contextmanager
def _counting(enabled: bool):
    if enabled:
        yield
        return
    with mock.patch.object(quotas, "add", lambda *a, **k: quotas.Usage(0, 0)):
        yield


def _per_call_ms(action, count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        action(n)
    return (time.perf_counter() - started) * 1000 / count


def bench_storage_set(writes: int, enabled: bool, resize: bool) -> float:
    """A value of 1 KiB on 100 keys, of the same size each time (a same-size overwrite is not
    counted) or one byte more or less than the last (`resize`: every write is counted)."""
    tenant_id, _ = _tenant_with_script()
    host = HostApi(tenant_id)
    values = ['"' + "v" * 1024 + '"', '"' + "v" * (1024 + resize) + '"']
    with _counting(enabled):

        def one(n: int) -> None:
            arg = {"key": f"k{n % 100}", "value": values[n // 100 % 2]}
            answer = host([{"id": n, "op": "storage.set", "arg": arg}])
            assert answer[0]["ok"], answer

        return _per_call_ms(one, writes)


def bench_record(writes: int, enabled: bool, logs: list) -> float:
    tenant_id, script_id = _tenant_with_script()
    ids = [uuid.uuid4() for _ in range(writes)]
    now = utcnow()
    rows = [
        {
            "id": i,
            "tenant_id": tenant_id,
            "script_id": script_id,
            "script_version": 1,
            "trigger": "api",
            "status": "running",
            "queued_at": now,
            "params": {},
        }
        for i in ids
    ]
    db.session.execute(insert(Execution), rows)
    db.session.commit()
    with _counting(enabled):

        def one(n: int) -> None:
            counted = (tenant_id, {}) if enabled else None
            jobs._record(ids[n], counted, status="succeeded", logs=logs, result={"ok": True}, finished_at=utcnow())

        return _per_call_ms(one, writes)


def bench_sum(executions: int) -> tuple[float, float]:
    """ms of SUM(stored_bytes) over one tenant's executions, and of the upkeep's recount."""
    tenant_id, script_id = _tenant_with_script()
    now = utcnow()
    for start in range(0, executions, 5000):
        db.session.execute(
            insert(Execution),
            [
                {
                    "id": uuid.uuid4(),
                    "tenant_id": tenant_id,
                    "script_id": script_id,
                    "script_version": 1,
                    "trigger": "api",
                    "status": "succeeded",
                    "queued_at": now,
                    "stored_bytes": 1200,
                }
                for _ in range(min(5000, executions - start))
            ],
        )
    db.session.commit()
    stmt = select(func.sum(Execution.stored_bytes)).where(Execution.tenant_id == tenant_id)
    db.session.scalar(stmt)  # warm the cache
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        db.session.scalar(stmt)
        timings.append((time.perf_counter() - started) * 1000)
        db.session.commit()
    started = time.perf_counter()
    quotas.enforce_storage_quotas()
    return statistics.median(timings), (time.perf_counter() - started) * 1000


def run(name: str, database_url: str, redis_url: str, writes: int, executions: int) -> None:
    app = _app(database_url, redis_url)
    with app.app_context():
        print(f"\n{name}")
        for resize, what in ((False, "same size"), (True, "size changes")):
            for enabled in (False, True):
                label = "counted" if enabled else "not counted"
                ms = bench_storage_set(writes, enabled, resize)
                print(f"  storage.set, 1 KiB, {what:14}  {label:12} {ms:7.3f} ms/call")
        for logs, what in ((LOGS_SMALL, "small logs"), (LOGS_CAP, "256 KiB logs")):
            for enabled in (False, True):
                label = "counted" if enabled else "not counted"
                ms = bench_record(writes if logs is LOGS_SMALL else writes // 10, enabled, logs)
                print(f"  run outcome, {what:20} {label:12} {ms:7.3f} ms/run")
        summed, recount = bench_sum(executions)
        print(f"  SUM(stored_bytes) over {executions:,} executions of one tenant: {summed:.1f} ms")
        print(f"  upkeep recount of every tenant (incl. those {executions:,}): {recount:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--executions", type=int, default=100_000)
    args = parser.parse_args()
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{tmp}/bench.db", redis_url, args.writes, args.executions)
        with postgres_server() as postgres_url:
            run("PostgreSQL", postgres_url, redis_url, args.writes, args.executions)


if __name__ == "__main__":
    main()
