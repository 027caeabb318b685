"""The scheduler process: fires cron scripts on time, exactly once, across restarts.

    python -m worker.scheduler

A pass takes the registry's due entries (webapp/cron_registry.py), claims each by moving it to
its next time with a compare-and-set, records the fire under the database's unique (script,
scheduled time) key and queues it for the workers. A claimed fire stays listed (CLAIMED_KEY)
until it is recorded and queued, so a scheduler killed in between leaves it to another once
its lease lapses. Fires due while no scheduler was firing collapse by misfire policy.
docs/cron.md says what users see; docs/architecture.md, "A cron fire", the protocol.

Built on rq-scheduler's Scheduler (its registration: birth, heartbeat, death), extended where it
falls short for us: its loop wakes at a fixed interval (fires land up to a second late and
drift), its cron parser has neither seconds-first 6-field expressions nor our DST rules, and it
keeps no record per fire. Here the loop sleeps until the next due fire or until a registry
change is published.
"""

import contextlib
import gc
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq_scheduler import Scheduler
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError

from webapp import cron, metrics
from webapp.app import create_app
from webapp.cron_registry import CHANGED_CHANNEL, DUE_KEY, HEARTBEAT_KEY, CronRegistry, Entry, from_ms, to_ms
from webapp.executions.maintenance import reap_lost
from webapp.executions.service import insert_ignoring_duplicates, queue_recorded_runs, queue_runs
from webapp.extensions import db
from webapp.models import Execution, Script, utcnow
from webapp.redis_client import get_redis
from webapp.secret_store.key_check import check_app_keys

log = logging.getLogger(__name__)
CLAIMED_KEY = "sr:cron:claimed"  # sorted set: claimed fire (ClaimedFire.member) -> when its claim lapses (ms)
STARTED_KEY = "sr:scheduler:started"  # hash: scheduler name -> when it started (epoch seconds)
RECONCILE_SECONDS = 30
MAX_SLEEP_SECONDS = 1.0
MISFIRE_GRACE_SECONDS = 5  # a fire this late was missed (no scheduler ran), not merely slow
# A claimed fire still unrecorded this long after its claim (recording takes milliseconds) is
# taken over by whichever scheduler sees it first; too early costs only a redundant insert (the
# database's unique key keeps one record per fire). Mid-way between whole seconds, such a late
# run does not meet the next run of an every-second script (it would be `skipped`).
CLAIM_LEASE_SECONDS = 1.5
MAX_CATCH_UP_STEPS = 1_000_000

# Move each due entry (id, due, next) to its next time only if no other scheduler did it
# first, and list the fire it stands for (if any) as claimed until ARGV[1]; returns 1/0 per
# entry. One round trip for a whole pass.
_CLAIM = """
local won = {}
for i = 2, #ARGV, 4 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
    if ARGV[i + 3] ~= '' then
      redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i + 3])
    end
    won[#won + 1] = 1
  else
    won[#won + 1] = 0
  end
end
return won
"""

# Claims whose lease lapsed by ARGV[1], leased again (until ARGV[2]) to the caller alone.
_TAKE_LAPSED = """
local taken = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(taken) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return taken
"""


class ScriptRef(NamedTuple):
    """The columns of a script that firing it reads."""

    id: uuid.UUID
    tenant_id: int
    version: int
    status: str
    type: str

    @staticmethod
    def columns() -> tuple:
        return (Script.id, Script.tenant_id, Script.version, Script.status, Script.type)


@dataclass(frozen=True)
class ClaimedFire:
    """A fire a scheduler won (moving its script's entry from due_ms to next_ms) and has yet
    to record in the database."""

    script_id: str
    version: int
    fire_at: datetime
    due_ms: int
    next_ms: int

    @property
    def member(self) -> str:
        return f"{self.script_id}|{self.version}|{self.fire_at.isoformat()}|{self.due_ms}|{self.next_ms}"

    @classmethod
    def parse(cls, member: str) -> "ClaimedFire":
        script_id, version, fire_at, due_ms, next_ms = member.split("|")
        return cls(script_id, int(version), datetime.fromisoformat(fire_at), int(due_ms), int(next_ms))


class Claims:
    """Due entries won by compare-and-set, and the fires they stand for, leased until recorded."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._take_lapsed = redis.register_script(_TAKE_LAPSED)

    def claim(self, moves: list[tuple[str, int, int]], fires: list[ClaimedFire | None] | None = None) -> list[bool]:
        """Move each (script id, due ms, next ms); True where this scheduler won the fire.
        The fire a won move stands for (fires[i], None for none) stays listed as claimed
        until `release`."""
        if not moves:
            return []
        fires = fires or [None] * len(moves)
        lapse_ms = int((time.time() + CLAIM_LEASE_SECONDS) * 1000)
        args: list[object] = [lapse_ms]
        for move, fire in zip(moves, fires, strict=True):
            args += [*move, fire.member if fire else ""]
        return [bool(w) for w in self._claim(keys=[DUE_KEY, CLAIMED_KEY], args=args)]

    def release(self, fires: list[ClaimedFire]) -> None:
        """The claimed fires are recorded in the database (or given back)."""
        if fires:
            self.redis.zrem(CLAIMED_KEY, *[fire.member for fire in fires])

    def take_lapsed(self, now_ms: int, limit: int = 1000) -> list[ClaimedFire]:
        """Claimed fires still unrecorded after their lease (their scheduler died, or stalls),
        now claimed by the caller: no other scheduler takes them before this lease lapses."""
        lapse_ms = now_ms + int(CLAIM_LEASE_SECONDS * 1000)
        members = self._take_lapsed(keys=[CLAIMED_KEY], args=[now_ms, lapse_ms, limit])
        return [ClaimedFire.parse(member.decode()) for member in members]


class ScriptScheduler(Scheduler):
    def __init__(self, connection: Redis, app=None, **kwargs):
        name = kwargs.pop("name", None) or f"{socket.gethostname()}.{os.getpid()}"
        super().__init__(queue_name="default", interval=1, connection=connection, name=name, **kwargs)
        self.app = app or create_app()
        self.registry = CronRegistry(connection)
        self.claims = Claims(connection)
        self.started_at = utcnow()
        self.others_alive_at_start = False
        self._last_reconcile = 0.0
        self._last_good_pass = utcnow()
        self._cut_off_since: datetime | None = None  # the last good pass, while passes fail
        self._gap: tuple[datetime, datetime] | None = None  # the last time it was cut off
        self._put_back: set[tuple[str, int]] = set()  # fires a failed pass had in hand
        self._stopping = False
        self._schedules: dict[tuple[str, str, str], cron.Schedule] = {}

    def run(self, burst: bool = False) -> None:
        self.register_birth()
        self._install_signal_handlers()
        pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANGED_CHANNEL)
        self.started_at = utcnow()  # fires due before now were missed, unless another scheduler ran
        self.others_alive_at_start = self.others_beating()
        log.info("scheduler %s started", self.name)
        try:
            while not self._stopping:
                wait = self.tick()
                if burst:
                    return
                self._sleep(pubsub, wait)
        finally:
            self.register_death()

    # -- rq-scheduler's registration, extended with our heartbeat -------------------------------
    def heartbeat(self) -> None:
        super().heartbeat()
        pipe = self.connection.pipeline()
        pipe.hset(HEARTBEAT_KEY, self.name, time.time())
        pipe.hset(STARTED_KEY, self.name, self.started_at.timestamp())
        pipe.execute()

    def register_death(self) -> None:
        self.connection.pipeline().hdel(HEARTBEAT_KEY, self.name).hdel(STARTED_KEY, self.name).execute()
        super().register_death()

    def others_beating(self, within: float = 2.5) -> bool:
        """Whether another scheduler beat lately (each beats at least once a second).

        A killed scheduler's last beat stays behind: one restarted at once would take it for a
        live scheduler and fire what was missed one by one instead of collapsing it. Beats of
        processes of this host that no longer exist therefore do not count (and are dropped).
        """
        now = time.time()
        beats = {k.decode(): float(v) for k, v in self.connection.hgetall(HEARTBEAT_KEY).items()}
        others = {n: t for n, t in beats.items() if n != self.name}
        gone = [n for n in others if _gone_from_this_host(n)]
        if gone:
            self.connection.pipeline().hdel(HEARTBEAT_KEY, *gone).hdel(STARTED_KEY, *gone).execute()
        return any(now - t < within for n, t in others.items() if n not in gone)

    def _install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT end the loop after the current pass (within a second).
        rq-scheduler's own handler exits at once, wherever it is: between a fire's claim and
        its record, or between its record and its job."""

        def stop(signum, frame) -> None:
            log.info("scheduler %s stopping", self.name)
            self._stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    # -- the loop -------------------------------------------------------------------------------
    def _sleep(self, pubsub, wait: float) -> None:
        """Until the next fire is due, or until a registry change is published."""
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
            with self.app.app_context():
                try:
                    stale = time.monotonic() - self._last_reconcile >= RECONCILE_SECONDS
                    if stale or not self.registry.intact():  # a Redis that restarted empty: at once
                        self.registry.reconcile()
                        reap_lost(self.connection)
                        self._last_reconcile = time.monotonic()
                    self.recover_claims()
                    self.fire_due()
                finally:
                    db.session.remove()
            earliest = self._next_wake_ms()
            self._last_good_pass = began
        except (RedisError, SQLAlchemyError, OSError):
            log.exception("scheduler pass failed; retrying in a second")
            if self._cut_off_since is None:
                self._cut_off_since = self._last_good_pass
            return MAX_SLEEP_SECONDS
        if earliest is None:
            return MAX_SLEEP_SECONDS
        return min(max(earliest / 1000 - time.time(), 0.0), MAX_SLEEP_SECONDS)

    def _next_wake_ms(self) -> int | None:
        """When there is work next: a fire falls due, or a claim lapses."""
        pipe = self.connection.pipeline(transaction=False)
        pipe.zrange(DUE_KEY, 0, 0, withscores=True)
        pipe.zrange(CLAIMED_KEY, 0, 0, withscores=True)
        times = [int(first[0][1]) for first in pipe.execute() if first]
        return min(times) if times else None

    def _resume(self) -> None:
        """Back after Redis or the database failed us. Fires that fell due since the last good
        pass were missed when no other scheduler is alive (none could fire them): they collapse
        by misfire policy, as after a restart. Fires a failed pass had in hand (it claimed
        them, then the database refused them) are not missed: they run now, late."""
        assert self._cut_off_since is not None
        # Another scheduler beating now fired (or put back) what fell due meanwhile: no gap.
        alone = not self.others_beating()
        self._gap = (self._cut_off_since, utcnow()) if alone else None
        self._cut_off_since = None
        log.info("scheduler %s resumed; fires missed meanwhile collapse by misfire policy", self.name)

    # -- firing ---------------------------------------------------------------------------------
    def fire_due(self) -> int:
        now = utcnow()
        due = self.registry.due(to_ms(now))
        if not due:
            return 0
        ids = [sid for sid, _ in due]
        entries = self.registry.entries(ids)
        scripts = self._scripts(ids)
        moves, planned = [], []
        for script_id, due_ms in due:
            entry, script = entries[script_id], scripts.get(script_id)
            if entry is None or not _runs(script):
                self.registry.remove(script_id)
                continue
            if entry.version != script.version:
                changed = db.session.get(Script, script.id)  # while its web process could not tell us
                if changed is not None:
                    self.registry.put(changed)
                continue
            schedule = self._schedule(entry)
            due_at = from_ms(due_ms)
            boundary = self._missed_until(due_at, now, put_back=(script_id, due_ms) in self._put_back)
            self._put_back.discard((script_id, due_ms))
            if boundary is not None:  # missed while no scheduler was firing: collapse by policy
                latest = latest_fire_at_or_before(schedule, due_at, boundary)
                fire_at = latest if entry.misfire_policy == "run_once" else None
                next_at = schedule.next_after(boundary)  # the fires after the gap run normally
            else:
                fire_at, next_at = due_at, schedule.next_after(due_at)
            next_ms = to_ms(next_at)
            moves.append((script_id, due_ms, next_ms))
            claim = ClaimedFire(script_id, script.version, fire_at, due_ms, next_ms) if fire_at else None
            planned.append((script, claim))
        won = self.claims.claim(moves, [c for _, c in planned])
        claimed = [(script, c) for (script, c), ok in zip(planned, won, strict=True) if ok and c is not None]
        try:
            recorded = record_fires([(script, c.fire_at) for script, c in claimed])
        except Exception:
            # Recording failed (database down?): put the claimed entries back, so the fires
            # are tried again (and collapse by policy if it lasts) instead of being lost.
            self.claims.claim([(sid, new, old) for (sid, old, new), ok in zip(moves, won, strict=True) if ok])
            self.claims.release([c for _, c in claimed])
            self._put_back.update((sid, old) for (sid, old, _), ok in zip(moves, won, strict=True) if ok)
            raise
        self.claims.release([c for _, c in claimed])
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
        orphans = self.claims.take_lapsed(to_ms(now))
        if not orphans:
            return 0
        recorded = self._recorded(orphans)
        queued = self._queue_again([eid for eid, status in recorded.values() if status == "queued"])
        unrecorded = [o for o in orphans if (o.script_id, o.fire_at) not in recorded]
        put_back = self.claims.claim([(o.script_id, o.next_ms, o.due_ms) for o in unrecorded])
        moved_on = [o for o, back in zip(unrecorded, put_back, strict=True) if not back]
        scripts = self._scripts([o.script_id for o in moved_on])
        fires = []
        for orphan in moved_on:
            script = scripts.get(orphan.script_id)
            if _runs(script) and script.version == orphan.version and self._missed_until(orphan.fire_at, now) is None:
                fires.append((script, orphan.fire_at))
        late = record_fires(fires)
        self.claims.release(orphans)
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

    def _scripts(self, ids: list[str]) -> dict[str, ScriptRef]:
        """What firing needs of each script, by id: a few columns, not whole scripts (their
        source can be large, and a pass may fire thousands)."""
        if not ids:
            return {}
        wanted = [uuid.UUID(sid) for sid in ids]
        rows = db.session.execute(select(*ScriptRef.columns()).where(Script.id.in_(wanted)))
        return {str(row.id): ScriptRef(*row) for row in rows}

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
        """Parsed once per expression and timezone in this process (scripts share them), and
        for @every once per anchor."""
        key = (entry.expression, entry.timezone, entry.anchor if cron.uses_anchor(entry.expression) else "")
        schedule = self._schedules.get(key)
        if schedule is None:
            if len(self._schedules) > 50_000:
                self._schedules.clear()
            schedule = self._schedules[key] = entry.schedule()
        return schedule


def record_fires(fires: list[tuple[Script | ScriptRef, datetime]]) -> list[uuid.UUID]:
    """Record and queue the cron fires of one pass; returns the recorded ids.

    Each (script, scheduled time) is recorded once whatever the number of schedulers: the
    database's unique key on it decides (the insert skips rows that exist). A fire while the
    script's previous run is still queued or running is recorded as `skipped` (a draft is not
    a run of the live script: it never holds a fire back).
    """
    if not fires:
        return []
    fired_at = utcnow()
    busy = set(
        db.session.scalars(
            select(Execution.script_id).where(
                Execution.script_id.in_([s.id for s, _ in fires]),
                Execution.status.in_(("queued", "running")),
                Execution.trigger != "draft",
            )
        )
    )
    rows = []
    for script, scheduled_at in fires:
        skipped = script.id in busy
        rows.append(
            {
                "id": uuid.uuid4(),
                "tenant_id": script.tenant_id,
                "script_id": script.id,
                "script_version": script.version,
                "trigger": "cron",
                "scheduled_at": scheduled_at,
                "params": {"type": "cron", "scheduled_at": scheduled_at.isoformat(), "fired_at": fired_at.isoformat()},
                "status": "skipped" if skipped else "queued",
                "error_message": "skipped: the previous run of this script was still in progress" if skipped else None,
                "queued_at": fired_at,
                "finished_at": fired_at if skipped else None,
            }
        )
    # A Core insert (no ORM bookkeeping per row): one statement for the pass's fires.
    table = Execution.__table__
    stmt = insert_ignoring_duplicates(table, ["script_id", "scheduled_at"]).returning(table.c.id)
    recorded = set(db.session.execute(stmt, rows).scalars())
    db.session.commit()
    queued = {row["id"]: row["tenant_id"] for row in rows if row["id"] in recorded and row["status"] == "queued"}
    existing = [(row["script_id"], row["scheduled_at"]) for row in rows if row["id"] not in recorded]
    queued.update(_recorded_earlier_unrun(existing))
    skipped = sum(1 for row in rows if row["id"] in recorded and row["status"] == "skipped")
    with contextlib.suppress(RedisError):
        pipe = get_redis().pipeline(transaction=False)
        pipe.hincrby(metrics.EVENTS, "cron_fires", len(recorded))
        pipe.hincrby(metrics.EVENTS, "cron_skips", skipped)
        pipe.execute()
    queue_runs(queued)
    return [row["id"] for row in rows if row["id"] in recorded]


def _recorded_earlier_unrun(fires: list[tuple[uuid.UUID, datetime]]) -> dict[uuid.UUID, int]:
    """Fires recorded by an earlier pass that could not queue them (Redis failed after the
    commit) and that no worker has taken, execution id -> tenant id: they are queued again (a
    run queued twice still runs once), or they would wait for the reaper, and the script's
    next fires be skipped."""
    if not fires:
        return {}
    same_fire = or_(*(and_(Execution.script_id == sid, Execution.scheduled_at == at) for sid, at in fires))
    query = select(Execution.id, Execution.tenant_id).where(same_fire, Execution.status == "queued")
    return dict(db.session.execute(query).tuples().all())


def latest_fire_at_or_before(schedule: cron.Schedule, first: datetime, now: datetime) -> datetime:
    """The last fire time <= now, starting from a fire time `first` <= now.

    After a long outage there may be millions of fires in between (an every-second script
    down for a month): look back from `now` in doubling windows for the nearest fire, then
    step forward from it, instead of stepping through them all.
    """
    window = timedelta(seconds=1)
    while now - window > first:
        candidate = schedule.next_after(now - window)
        if candidate <= now:
            return _last_up_to(schedule, candidate, now)
        window *= 2
    return _last_up_to(schedule, first, now)


def _last_up_to(schedule: cron.Schedule, fire: datetime, now: datetime) -> datetime:
    for _ in range(MAX_CATCH_UP_STEPS):
        following = schedule.next_after(fire)
        if following > now:
            return fire
        fire = following
    return fire


def _runs(script: ScriptRef | None) -> bool:
    """Whether a script is (still) one the scheduler fires."""
    return script is not None and script.status == "active" and script.type == "cron"


def _gone_from_this_host(name: str) -> bool:
    """Whether a scheduler name (`hostname.pid`) is a process of this host that has ended."""
    host, _, pid = name.rpartition(".")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app()
    check_app_keys(app)  # a wrong SECRETS_KEY refuses to start (webapp/secret_store/key_check.py)
    redis = Redis.from_url(app.config["SETTINGS"].redis_url, health_check_interval=30)
    # What startup made (modules, the app, SQLAlchemy's mappers) lives as long as the process:
    # out of every collection, it no longer makes each pass's garbage costly to collect (a
    # fifth of the CPU of firing 10,000 scripts a minute; docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    ScriptScheduler(redis, app).run()


if __name__ == "__main__":
    main()
