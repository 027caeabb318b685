"""The scheduler process: fires cron scripts on time, exactly once, across restarts.

    python -m worker.scheduler

Built on rq-scheduler's Scheduler (its registration, heartbeat, lock and signal handling,
and it still moves rq-scheduler's own delayed jobs), extended where it falls short for us:
its loop wakes at a fixed interval (fires land up to a second late and drift), its cron
parser has neither seconds-first 6-field expressions nor our DST rules, and it keeps no
record per fire. Here the loop sleeps until the next due fire or until a schedule change is
published; each fire is recorded under the database's unique (script, scheduled time) key.
"""

import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from datetime import datetime

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq_scheduler import Scheduler
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from webapp import cron
from webapp.app import create_app
from webapp.executions.maintenance import reap_lost
from webapp.executions.service import fire_cron, queue_recorded_runs
from webapp.extensions import db
from webapp.models import Execution, Script, utcnow
from webapp.scheduling import (
    CHANGED_CHANNEL,
    MISFIRE_GRACE_SECONDS,
    ClaimedFire,
    CronScheduler,
    Entry,
    from_ms,
    latest_fire_at_or_before,
    to_ms,
)

log = logging.getLogger(__name__)
RECONCILE_SECONDS = 30
MAX_SLEEP_SECONDS = 1.0


class ScriptScheduler(Scheduler):
    def __init__(self, connection: Redis, app=None, **kwargs):
        name = kwargs.pop("name", None) or f"{socket.gethostname()}.{os.getpid()}"
        super().__init__(queue_name="default", interval=1, connection=connection, name=name, **kwargs)
        self.app = app or create_app()
        self.cron = CronScheduler(connection)
        self.started_at = utcnow()
        self.others_alive_at_start = False
        self._last_reconcile = 0.0
        self._last_good_pass = utcnow()
        self._cut_off_since: datetime | None = None  # the last good pass, while passes fail
        self._gap: tuple[datetime, datetime] | None = None  # the last time it was cut off
        self._put_back: set[tuple[str, int]] = set()  # fires a failed pass had in hand
        self._stopping = False
        self._schedules: dict[tuple[str, int], cron.Schedule] = {}

    def run(self, burst: bool = False) -> None:
        self.register_birth()
        self._install_signal_handlers()
        pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANGED_CHANNEL)
        self.started_at = utcnow()  # fires due before now were missed, unless another scheduler ran
        self.others_alive_at_start = self.cron.others_beating(self.name)
        log.info("scheduler %s started", self.name)
        try:
            while not self._stopping:
                wait = self.tick()
                if burst:
                    return
                self._sleep(pubsub, wait)
        finally:
            self.cron.forget(self.name)
            self.remove_lock()
            self.register_death()

    def _install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT end the loop after the current pass (within a second).
        rq-scheduler's own handler exits at once, wherever it is: between a fire's claim and
        its record, or between its record and its job."""

        def stop(signum, frame) -> None:
            log.info("scheduler %s stopping", self.name)
            self._stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def _sleep(self, pubsub, wait: float) -> None:
        """Until the next fire is due, or until a schedule change is published."""
        try:
            if pubsub.get_message(timeout=wait) is not None:
                while pubsub.get_message(timeout=0) is not None:
                    pass
        except RedisError:  # tick() reports the outage; the subscription comes back with Redis
            time.sleep(wait)
            with contextlib.suppress(RedisError):
                pubsub.ping()

    def tick(self) -> float:
        """One pass; returns how long to wait before the next one."""
        began = utcnow()
        try:
            if self._cut_off_since is not None:
                self._resume()
            self.heartbeat()
            self.cron.beat(self.name, self.started_at)
            if self.acquire_lock():  # rq-scheduler's own delayed jobs, one scheduler at a time
                super().enqueue_jobs()
                self.remove_lock()
            with self.app.app_context():
                try:
                    stale = time.monotonic() - self._last_reconcile >= RECONCILE_SECONDS
                    if stale or not self.cron.intact():  # a Redis that restarted empty: at once
                        self.cron.start()
                        reap_lost(self.connection)
                        self._last_reconcile = time.monotonic()
                    self.recover_claims()
                    self.fire_due()
                finally:
                    db.session.remove()
            earliest = self.cron.next_wake_ms()
            self._last_good_pass = began
        except (RedisError, SQLAlchemyError, OSError):
            log.exception("scheduler pass failed; retrying in a second")
            if self._cut_off_since is None:
                self._cut_off_since = self._last_good_pass
            return MAX_SLEEP_SECONDS
        if earliest is None:
            return MAX_SLEEP_SECONDS
        return min(max(earliest / 1000 - time.time(), 0.0), MAX_SLEEP_SECONDS)

    def _resume(self) -> None:
        """Back after Redis or the database failed us. Fires that fell due since the last good
        pass were missed when no other scheduler is alive (none could fire them): they collapse
        by misfire policy, as after a restart. Fires a failed pass had in hand (it claimed
        them, then the database refused them) are not missed: they run now, late."""
        assert self._cut_off_since is not None
        # Another scheduler beating now fired (or put back) what fell due meanwhile: no gap.
        alone = not self.cron.others_beating(self.name)
        self._gap = (self._cut_off_since, utcnow()) if alone else None
        self._cut_off_since = None
        log.info("scheduler %s resumed; fires missed meanwhile collapse by misfire policy", self.name)

    def fire_due(self) -> int:
        now = utcnow()
        due = self.cron.due(to_ms(now))
        if not due:
            return 0
        ids = [sid for sid, _ in due]
        entries = self.cron.entries(ids)
        scripts = self._scripts(ids)
        moves, planned = [], []
        for script_id, due_ms in due:
            entry, script = entries[script_id], scripts.get(script_id)
            if entry is None or not _runs(script):
                self.cron.remove_job(script_id)
                continue
            if entry.version != script.version:
                self.cron.add_job(script)  # changed while its web process could not tell us
                continue
            schedule = self._schedule(entry)
            due_at = from_ms(due_ms)
            boundary = self._missed_until(due_at, now, put_back=(script_id, due_ms) in self._put_back)
            self._put_back.discard((script_id, due_ms))
            if boundary is not None:  # missed while no scheduler was firing: collapse by policy
                latest = latest_fire_at_or_before(schedule, due_at, boundary)
                fire_at = latest if entry.misfire_policy == "run_once" else None
                next_at = schedule.next_after(boundary)  # later fires run normally
            else:
                fire_at, next_at = due_at, schedule.next_after(due_at)
            next_ms = to_ms(next_at)
            moves.append((script_id, due_ms, next_ms))
            claim = ClaimedFire(script_id, script.version, fire_at, due_ms, next_ms) if fire_at else None
            planned.append((script, claim))
        won = self.cron.claim(moves, [c for _, c in planned])
        claimed = [(script, c) for (script, c), ok in zip(planned, won, strict=True) if ok and c is not None]
        try:
            recorded = fire_cron([(script, c.fire_at) for script, c in claimed])
        except Exception:
            # Recording failed (database down?): put the claimed entries back, so the fires
            # are tried again (and collapse by policy if it lasts) instead of being lost.
            self.cron.claim([(sid, new, old) for (sid, old, new), ok in zip(moves, won, strict=True) if ok])
            self.cron.release([c for _, c in claimed])
            self._put_back.update((sid, old) for (sid, old, _), ok in zip(moves, won, strict=True) if ok)
            raise
        self.cron.release([c for _, c in claimed])
        return len(recorded)

    def recover_claims(self) -> int:
        """Take over the fires a scheduler claimed but did not see through: it died (SIGKILL,
        power loss) before recording them, or before queueing them.

        A recorded fire gets its job if it has none. An unrecorded one: where nothing moved
        its script's entry since, the entry is put back and fire_due decides afresh (fires
        missed while no scheduler ran collapse by policy); where other schedulers fired the
        script since, it is recorded now, late, unless it counts as missed. Had its scheduler
        merely stalled and records it too, the database's unique key keeps one record."""
        now = utcnow()
        orphans = self.cron.take_lapsed_claims(to_ms(now))
        if not orphans:
            return 0
        recorded = self._recorded(orphans)
        queued = self._queue_again([eid for eid, status in recorded.values() if status == "queued"])
        unrecorded = [o for o in orphans if (o.script_id, o.fire_at) not in recorded]
        put_back = self.cron.claim([(o.script_id, o.next_ms, o.due_ms) for o in unrecorded])
        moved_on = [o for o, back in zip(unrecorded, put_back, strict=True) if not back]
        scripts = self._scripts([o.script_id for o in moved_on])
        fires = []
        for orphan in moved_on:
            script = scripts.get(orphan.script_id)
            if _runs(script) and script.version == orphan.version and self._missed_until(orphan.fire_at, now) is None:
                fires.append((script, orphan.fire_at))
        late = fire_cron(fires)
        self.cron.release(orphans)
        log.warning(
            "took over %d fire(s) of a scheduler that stopped: %d queued again, %d put back, %d recorded late",
            len(orphans),
            queued,
            len(unrecorded) - len(moved_on),
            len(late),
        )
        return len(late) + queued

    def _recorded(self, fires: list[ClaimedFire]) -> dict[tuple[str, datetime], tuple[uuid.UUID, str]]:
        """(script id, fire time) -> (execution id, status) of those fires already recorded."""
        rows = db.session.execute(
            select(Execution.script_id, Execution.scheduled_at, Execution.id, Execution.status).where(
                Execution.script_id.in_({uuid.UUID(f.script_id) for f in fires}),
                Execution.scheduled_at.in_({f.fire_at for f in fires}),
            )
        )
        return {(str(sid), at): (eid, status) for sid, at, eid, status in rows}

    def _queue_again(self, execution_ids: list[uuid.UUID]) -> int:
        """Queue the recorded runs whose job is missing. Should both a stalled scheduler and
        this one queue a run, its worker runs it once (it claims the run from `queued`)."""
        lost = [eid for eid in execution_ids if not Job.exists(str(eid), connection=self.connection)]
        queue_recorded_runs(lost, self.connection)
        return len(lost)

    def _scripts(self, ids: list[str]) -> dict[str, Script]:
        wanted = [uuid.UUID(sid) for sid in ids]
        return {str(s.id): s for s in db.session.scalars(select(Script).where(Script.id.in_(wanted)))} if ids else {}

    def _missed_until(self, due_at: datetime, now: datetime, put_back: bool = False) -> datetime | None:
        """The end of the gap a fire fell in, or None when it is merely due now.

        A fire was missed when no scheduler was firing at its time: it fell due before this
        scheduler started while no other one was alive, or while this one was cut off from
        Redis or the database (had another fired it, it would not be due) unless a failed pass
        had it in hand (`put_back`), or it is long overdue (every scheduler was stalled or cut off).
        """
        if due_at < self.started_at and not self.others_alive_at_start:
            return self.started_at
        if self._gap is not None and self._gap[0] <= due_at < self._gap[1] and not put_back:
            return self._gap[1]
        if (now - due_at).total_seconds() > MISFIRE_GRACE_SECONDS:
            return now
        return None

    def _schedule(self, entry: Entry) -> cron.Schedule:
        """Parsed once per (script, version) in this process."""
        key = (entry.script_id, entry.version)
        schedule = self._schedules.get(key)
        if schedule is None:
            if len(self._schedules) > 50_000:
                self._schedules.clear()
            schedule = self._schedules[key] = entry.schedule()
        return schedule


def _runs(script: Script | None) -> bool:
    """Whether a script is (still) one the scheduler fires."""
    return script is not None and script.status == "active" and script.type == "cron"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app()
    redis = Redis.from_url(app.config["SETTINGS"].redis_url, health_check_interval=30)
    ScriptScheduler(redis, app).run()


if __name__ == "__main__":
    main()
