"""What a worker does for endpoint calls after answering them, in batches off the callers' path.

Every GATHER_SECONDS: the calls' metrics (summed per field) and the removal of their RQ jobs
go to Redis in one round trip, then their execution rows go to the database in one INSERT. A
row that cannot be written stays queued and is retried; the call stays listed in Redis
(calls.INFLIGHT) until its row is in, so even a worker that dies with rows in hand leaves them
for the reaper to record as lost. Such a worker loses the last GATHER_SECONDS of counts.
"""

import contextlib
import logging
import threading
from typing import Any

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from webapp import quotas
from webapp.endpoints.calls import INFLIGHT
from webapp.executions.service import insert_ignoring_duplicates
from webapp.extensions import db
from webapp.metrics import RunCounts
from webapp.models import Execution

log = logging.getLogger(__name__)
GATHER_SECONDS = 0.1  # how long rows collect before a write
RETRY_SECONDS = 1.0
BATCH_ROWS = 200


class RecordWriter:
    def __init__(self, app: Flask, redis: Redis):
        self.app, self.redis = app, redis
        self._rows: list[dict[str, Any]] = []
        self._counts = RunCounts()
        self._done_jobs: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._write_batches, name="records", daemon=True)
        self._thread.start()

    def add(self, row: dict[str, Any] | None, counts: RunCounts | None = None, job_key: str | None = None) -> None:
        """An answered call: its row to record (None if recorded already or not to be), its
        metrics, and its RQ job's key to delete."""
        with self._lock:
            if row is not None:
                self._rows.append(row)
            if counts:
                self._counts.ints.update(counts.ints)
                self._counts.sums.update(counts.sums)
            if job_key is not None:
                self._done_jobs.append(job_key)
        self._wake.set()

    def write_now(self, row: dict[str, Any]) -> None:
        """Write one row before going on (a failed call: its caller may look the id up at once)."""
        try:
            self._write([row])
        except Exception:
            log.exception("execution %s not recorded yet; retrying in the background", row["id"])
            self.add(row)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._flush_redis()
        while self._rows and self.flush():
            pass

    def flush(self) -> bool:
        """Write what has collected; False if it must be retried."""
        with self._lock:
            rows, self._rows = self._rows[:BATCH_ROWS], self._rows[BATCH_ROWS:]
        if not rows:
            return True
        try:
            self._write(rows)
            return True
        except Exception:
            log.exception("%d execution(s) not recorded yet; retrying", len(rows))
            with self._lock:
                self._rows[:0] = rows
            return False

    def _write_batches(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            self._closed.wait(GATHER_SECONDS)
            self._wake.clear()
            self._flush_redis()
            while self._rows and not self._closed.is_set():
                if not self.flush():  # the database is away: try again in a second, calls or not
                    self._closed.wait(RETRY_SECONDS)
                    self._flush_redis()  # metrics and job removals need no database
                elif len(self._rows) < BATCH_ROWS:
                    break  # rows added during the write gather for the next one (tiny batches cost)

    def _flush_redis(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, RunCounts()
            done_jobs, self._done_jobs = self._done_jobs, []
        if not counts and not done_jobs:
            return
        pipe = self.redis.pipeline(transaction=False)
        counts.write(pipe)
        if done_jobs:
            pipe.unlink(*done_jobs)
        try:
            pipe.execute()
        except RedisError:  # written again, some counts could count twice: they are dropped
            log.warning("metrics of %d call(s) not recorded: Redis is unavailable", len(done_jobs))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.app.app_context():
            try:
                # A plain INSERT of the table: SQLAlchemy caches its compiled form (not so with
                # ON CONFLICT), and skips the ORM's bulk machinery.
                # Counted first: what each row keeps is charged to its tenant's storage quota.
                db.session.execute(insert(Execution.__table__), quotas.count_outcomes(rows))
                db.session.commit()
            except IntegrityError:  # rare: a caller gave up and recorded one, or a script went
                db.session.rollback()
                self._write_one_by_one(rows)
            finally:
                db.session.remove()
        with contextlib.suppress(RedisError):
            self.redis.hdel(INFLIGHT, *[str(row["id"]) for row in rows])

    def _write_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        """A batch failed on a constraint. A row its caller recorded already (it gave up
        waiting) is kept as the caller saw it; a call of a script deleted meanwhile has nothing
        left to belong to; the others are written."""
        for row in rows:
            for attempt in (row, {**row, "user_id": None}):  # a deleted user only loses the link
                try:
                    stmt = insert_ignoring_duplicates(Execution, ["id"]).values(quotas.count_outcomes([attempt])[0])
                    if db.session.execute(stmt.returning(Execution.id)).first() is None:
                        db.session.rollback()  # recorded already: its counting is undone
                    else:
                        db.session.commit()
                    break
                except IntegrityError:
                    db.session.rollback()
            else:
                log.warning("execution %s not recorded: its script was deleted", row["id"])
