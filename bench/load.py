"""Load benchmark (issue 7): endpoint calls over concurrent connections while cron scripts fire
every second, the real processes on loopback.

    .venv/bin/python bench/load.py [--calls 2000] [--rounds 2] [--concurrency 16] [--crons 10]
                                   [--database sqlite|postgresql]

Starts Redis, the database (SQLite, or a throwaway PostgreSQL cluster), the Procfile's web
process (gunicorn with gunicorn.conf.py, 2 processes × 16 threads), 2 workers and 1 scheduler.
Creates an endpoint script and the cron scripts (6 fields, every second) through the REST
API, then sends a warm-up round and two rounds of exactly --calls calls, each over
--concurrency connections, while the cron scripts fire. Checks, as the executions list shows
them: every call answered 200 with its own body; exactly one endpoint execution per call;
every cron fire recorded once, no second missing, each `succeeded` or `skipped`; nothing left
queued or running; no process's memory growing from round 1 to round 2 by more than
--max-growth percent (from the next-to-last round to the last). Prints markdown tables and exits 1 if any check failed.

The client is Python (a thread per connection, one keep-alive session each) rather than wrk:
each call's status and body are checked, so errors are counted exactly. It takes a share of
the two cores, so calls/s here is lower than bench/endpoints.py's wrk figure.
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.load import run_load
from tests.services import (
    SINGLE_TENANT_LOAD,
    SchedulerProcess,
    WorkerProcess,
    admin_token,
    postgres_server,
    redis_server,
)
from tests.web_process import WebProcess
from webapp.app import create_app
from webapp.config import Settings
from webapp.extensions import db


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgresql":
        with postgres_server() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="endpoint calls per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --calls after the warm-up")
    parser.add_argument("--warmup", type=int, default=200, help="calls before the first memory sample")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--crons", type=int, default=10, help="cron scripts firing every second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--max-growth", type=float, default=10.0, help="RSS growth allowed over the last round, %%")
    args = parser.parse_args()
    started = time.monotonic()
    with redis_server() as redis_url, database(args.database) as database_url:
        app = create_app(replace(Settings.from_env(), database_url=database_url, redis_url=redis_url))
        token = admin_token(app)
        # Retention prunes beyond 1,000 executions per script; every call here must stay counted.
        keep = {"EXECUTION_RETENTION_COUNT": "10000000", **SINGLE_TENANT_LOAD}
        web = WebProcess(database_url, redis_url, **keep)
        workers: list[WorkerProcess] = []
        scheduler = SchedulerProcess(database_url, redis_url, **keep)
        try:
            web.start()
            workers += [WorkerProcess(database_url, redis_url, **keep).start() for _ in range(args.workers)]
            scheduler.start()
            report = run_load(
                app,
                redis_url,
                web,
                workers,
                scheduler,
                {"Authorization": f"Bearer {token}"},
                calls=args.calls,
                rounds=args.rounds,
                warmup=args.warmup,
                concurrency=args.concurrency,
                crons=args.crons,
                max_growth_pct=args.max_growth,
            )
        finally:
            scheduler.stop()
            for worker in workers:
                worker.stop()
            web.stop()
            with app.app_context():
                db.engine.dispose()
    print(
        f"## Load: {args.calls:,} endpoint calls per round over {args.concurrency} connections, "
        f"{args.crons} cron scripts firing every second\n"
    )
    print(
        f"{datetime.now(UTC):%Y-%m-%d}, {args.database}, gunicorn (2 processes × 16 threads), "
        f"{args.workers} workers, 1 scheduler; {time.monotonic() - started:.0f} s in all.\n"
    )
    print(report.markdown())
    logs = [process.log_path for process in [web, *workers, scheduler]]
    if report.problems:
        print("\nProcess logs: " + ", ".join(map(str, logs)))
        return 1
    for log in logs:
        log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
