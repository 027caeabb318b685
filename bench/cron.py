"""Cron scheduler benchmark: how late fires start, whether any is missed or doubled, and
what the scheduler costs with many scripts.

    .venv/bin/python bench/cron.py [--minutes 0.5] [--scripts 100] [--workers 3] [--many 10000]

Part 1: N scripts firing every second for the given minutes, real scheduler and workers.
Lateness is measured twice: when the scheduler queued the fire (queued_at) and when a worker
started it (started_at), each against the fire's scheduled time. Part 2: the scheduler's CPU
time per minute with many active every-minute scripts (no workers: only the scheduler's
share is measured).
"""

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import SINGLE_TENANT_LOAD, SchedulerProcess, WorkerProcess, redis_server
from webapp.app import create_app
from webapp.config import Settings
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, Tenant, utcnow

SOURCE = "function main(event) { return event.scheduled_at }"


def _app(database_url: str, redis_url: str):
    app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
    with app.app_context():
        db.create_all()
    return app


def _create_scripts(app, count: int, expression: str) -> list[uuid.UUID]:
    with app.app_context():
        tenant = Tenant(name="bench")
        db.session.add(tenant)
        db.session.flush()
        now, ids, scripts, versions = utcnow(), [], [], []
        for i in range(count):
            script_id = uuid.uuid4()
            ids.append(script_id)
            common = {
                "type": "cron",
                "source": SOURCE,
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


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def every_second(minutes: float, scripts: int, workers: int) -> None:
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        app = _app(database_url, redis_url)
        _create_scripts(app, scripts, "*/1 * * * * *")  # the scheduler's first reconcile adds them
        pool = [WorkerProcess(database_url, redis_url, **SINGLE_TENANT_LOAD).start() for _ in range(workers)]
        scheduler = SchedulerProcess(database_url, redis_url).start()
        start = utcnow().replace(microsecond=0) + timedelta(seconds=3)  # measure a settled window
        end = start + timedelta(seconds=round(minutes * 60))
        time.sleep((end - utcnow()).total_seconds() + 5)
        scheduler.stop()
        for worker in pool:
            worker.stop()
        with app.app_context():
            rows = db.session.execute(
                db.select(
                    Execution.script_id,
                    Execution.scheduled_at,
                    Execution.queued_at,
                    Execution.started_at,
                    Execution.status,
                ).where(Execution.scheduled_at >= start, Execution.scheduled_at < end)
            ).all()
    seconds = int((end - start).total_seconds())
    expected = seconds * scripts
    per_fire: dict[tuple, int] = {}
    for row in rows:
        per_fire[(row.script_id, row.scheduled_at)] = per_fire.get((row.script_id, row.scheduled_at), 0) + 1
    doubled = sum(n - 1 for n in per_fire.values() if n > 1)
    missed = expected - len(per_fire)
    queued = [_ms(r.queued_at - r.scheduled_at) for r in rows]
    started = [_ms(r.started_at - r.scheduled_at) for r in rows if r.started_at]
    skipped = sum(1 for r in rows if r.status == "skipped")
    print(f"## {scripts} scripts every second for {seconds} s ({workers} workers, 1 scheduler)\n")
    print("| measured against the scheduled time | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| fire queued by the scheduler | {_pct(queued, 50):.1f} | {_pct(queued, 99):.1f} | {max(queued):.1f} |")
    if started:
        print(f"| run started by a worker | {_pct(started, 50):.1f} | {_pct(started, 99):.1f} | {max(started):.1f} |")
    print(
        f"\nfires expected {expected}, recorded {len(per_fire)}, missed {missed}, doubled {doubled}, "
        f"skipped (previous run still going) {skipped}\n"
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def many_every_minute(count: int, minutes: float) -> None:
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        app = _app(database_url, redis_url)
        _create_scripts(app, count, "* * * * *")
        scheduler = SchedulerProcess(database_url, redis_url).start()
        time.sleep(5)  # startup and the first reconcile of all scripts
        before, started = _cpu_seconds(scheduler.proc.pid), time.monotonic()
        time.sleep(minutes * 60)
        cpu = _cpu_seconds(scheduler.proc.pid) - before
        elapsed = time.monotonic() - started
        scheduler.stop()
        with app.app_context():
            fires = db.session.scalar(db.select(db.func.count()).select_from(Execution))
    print(f"## {count:,} active every-minute scripts, scheduler alone, {elapsed:.0f} s\n")
    print("| scheduler CPU per minute | share of one core | fires recorded |")
    print("| ---: | ---: | ---: |")
    print(f"| {cpu / elapsed * 60:.2f} s | {cpu / elapsed * 100:.1f}% | {fires:,} |\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=0.5)
    parser.add_argument("--scripts", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--many", type=int, default=10_000)
    parser.add_argument("--many-minutes", type=float, default=2)
    args = parser.parse_args()
    every_second(args.minutes, args.scripts, args.workers)
    many_every_minute(args.many, args.many_minutes)


if __name__ == "__main__":
    main()
