"""Cron scheduler benchmark: how late fires start, whether any is missed or doubled, and
what the scheduler costs with many scripts.

    .venv/bin/python bench/cron.py [--minutes 0.5] [--scripts 100] [--workers 3] [--many 10000]
                                   [--many-minutes 2] [--max-share 5] [--only every-second|many]

Part 1: N scripts firing every second for the given minutes, real scheduler and workers.
Lateness is measured twice: when the scheduler queued the fire (queued_at) and when a worker
started it (started_at), each against the fire's scheduled time. Part 2: the scheduler's CPU
time per minute with many active every-minute scripts beside its idle baseline (no workers:
only the scheduler's share is measured); exits 1 if it is not under --max-share percent of one
core with the runs drained.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis

from bench._stack import create_cron_scripts
from tests.services import SINGLE_TENANT_LOAD, SchedulerProcess, WorkerProcess, eventually, redis_server
from webapp.app import create_app
from webapp.config import Settings
from webapp.cron_registry import DUE_KEY
from webapp.extensions import db
from webapp.models import Execution, utcnow


def _app(database_url: str, redis_url: str):
    app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
    with app.app_context():
        db.create_all()
    return app


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def every_second(minutes: float, scripts: int, workers: int) -> None:
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        app = _app(database_url, redis_url)
        create_cron_scripts(app, scripts, "*/1 * * * * *")  # the scheduler's first reconcile adds them
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
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(app, redis_url: str, stop: threading.Event) -> None:
    """Stand in for workers that keep up: every queued fire is marked done and its job
    dropped, so each minute's fires are queued (not skipped behind the last minute's) while
    no worker spends CPU beside the scheduler."""
    redis = Redis.from_url(redis_url)
    while not stop.wait(2):
        with app.app_context():
            db.session.execute(
                db.update(Execution)
                .where(Execution.status == "queued")
                .values(status="succeeded", finished_at=utcnow())
            )
            db.session.commit()
        redis.delete("rq:queue:default")


def _recorded(app) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(Execution))


def _scheduler_share(count: int, minutes: float, drained: bool) -> dict:
    """The scheduler's CPU share with `count` active every-minute scripts, measured from
        /proc/<pid>/stat once every script is scheduled; the fires counted are those queued
    meanwhile."""
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        app = _app(database_url, redis_url)
        if count:
            create_cron_scripts(app, count, "* * * * *")
        stop = threading.Event()
        drainer = threading.Thread(target=_drain, args=(app, redis_url, stop), daemon=True)
        if drained:
            drainer.start()
        scheduler = SchedulerProcess(database_url, redis_url).start()
        # Startup: the first reconcile puts every script in the schedule.
        eventually(lambda: Redis.from_url(redis_url).zcard(DUE_KEY) == count, 120, "all scripts scheduled")
        eventually(lambda: _recorded(app) >= count, 120, "the first minute's fires")  # parses each schedule
        # Start half-way between two minutes: a window of whole minutes then holds whole fire
        # bursts (one a minute), never the tail of one that began before it.
        start = utcnow().replace(second=30, microsecond=0)
        if start < utcnow() + timedelta(seconds=1):
            start += timedelta(minutes=1)
        time.sleep((start - utcnow()).total_seconds())
        before, started, since = _cpu_seconds(scheduler.proc.pid), time.monotonic(), utcnow()
        time.sleep(minutes * 60)
        cpu = _cpu_seconds(scheduler.proc.pid) - before
        elapsed, until = time.monotonic() - started, utcnow()
        scheduler.stop()
        stop.set()
        if drained:
            drainer.join()
        with app.app_context():
            counts = dict(
                db.session.execute(
                    db.select(Execution.status, db.func.count())
                    .where(Execution.queued_at >= since, Execution.queued_at < until)
                    .group_by(Execution.status)
                ).all()
            )
    return {"cpu": cpu, "elapsed": elapsed, "skipped": counts.pop("skipped", 0), "fires": sum(counts.values())}


def many_every_minute(count: int, minutes: float, max_share: float) -> bool:
    """The scheduler alone (no workers): idle with no schedules, then `count` every-minute
    scripts with their runs drained as workers would (each fire queued), then the same with
    nothing drained (the fires after the first minute's are skipped: the runs are still queued).
    True if the drained case stays under `max_share` percent of one core."""
    cases = [
        ("no schedules (baseline)", _scheduler_share(0, minutes, drained=False)),
        (f"{count:,} every minute, runs drained", _scheduler_share(count, minutes, drained=True)),
        (f"{count:,} every minute, runs left queued", _scheduler_share(count, minutes, drained=False)),
    ]
    print(f"## The scheduler alone, {minutes * 60:.0f} s each\n")
    print("| schedules | scheduler CPU per minute | share of one core | fires queued | fires skipped |")
    print("| --- | ---: | ---: | ---: | ---: |")
    shares = []
    for name, m in cases:
        share = m["cpu"] / m["elapsed"]
        shares.append(share * 100)
        print(f"| {name} | {share * 60:.2f} s | {share * 100:.1f}% | {m['fires']:,} | {m['skipped']:,} |")
    ok = shares[1] < max_share
    print(f"\ncheck: {count:,} every-minute schedules, runs drained: {shares[1]:.1f}% of one core", end=" ")
    print(f"({'under' if ok else 'NOT under'} {max_share:g}%)\n")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=0.5)
    parser.add_argument("--scripts", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--many", type=int, default=10_000)
    parser.add_argument("--many-minutes", type=float, default=2)
    parser.add_argument("--max-share", type=float, default=5.0, help="percent of one core the check allows")
    parser.add_argument("--only", choices=["every-second", "many"], help="run one part of the two")
    args = parser.parse_args()
    if args.only != "many":
        every_second(args.minutes, args.scripts, args.workers)
    if args.only != "every-second" and not many_every_minute(args.many, args.many_minutes, args.max_share):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
