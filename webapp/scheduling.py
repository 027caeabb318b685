"""The cron schedule: which cron script fires next and when, kept in Redis.

The database is the source of truth; this is its index for the scheduler process. Web
processes call add_job / update_job / remove_job (through the script service's signals) so a
change reaches the scheduler at once (a Redis write plus a wake-up message); the scheduler
reconciles with the database at start and every RECONCILE_SECONDS, which heals anything a
Redis outage made it miss.

Entries: a hash script id -> {version, expression, timezone, misfire_policy, anchor}, and a
sorted set script id -> due time in epoch milliseconds. A scheduler claims a due entry (moves
it to its next time) before it records the fire in the database; the claimed fire is listed
until it is recorded and queued, so that a scheduler killed in between leaves it to another.
"""

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from webapp import cron
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, utcnow
from webapp.redis_client import get_redis

log = logging.getLogger(__name__)
DUE_KEY = "sr:cron:due"
ENTRIES_KEY = "sr:cron:entries"
CHANGED_CHANNEL = "sr:cron:changed"
RECONCILED_KEY = "sr:cron:reconciled"  # set by each reconcile: gone means Redis lost the schedule
CLAIMED_KEY = "sr:cron:claimed"  # sorted set: claimed fire (ClaimedFire.member) -> when its claim lapses (ms)
HEARTBEAT_KEY = "sr:scheduler:heartbeat"  # hash: scheduler name -> last beat (epoch seconds)
STARTED_KEY = "sr:scheduler:started"  # hash: scheduler name -> when it started (epoch seconds)
HEARTBEAT_STALE_SECONDS = 10
MISFIRE_GRACE_SECONDS = 5  # a fire this late was missed (no scheduler ran), not merely slow
# A claimed fire still unrecorded this long after its claim (recording takes milliseconds) is
# taken over by whichever scheduler sees it first; too early costs only a redundant insert (the
# database's unique key keeps one record per fire). Mid-way between whole seconds, such a late
# run does not meet the next run of an every-second script (it would be `skipped`).
CLAIM_LEASE_SECONDS = 1.5
MAX_CATCH_UP_STEPS = 1_000_000

# Move each due entry (id, due, next) to its next time only if no other scheduler did it
# first, and list the fire it stands for (if any) as claimed until ARGV[1]; returns 1/0 per
# entry. One round trip for a whole tick.
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


@dataclass(frozen=True)
class Entry:
    script_id: str
    version: int
    expression: str
    timezone: str
    misfire_policy: str
    anchor: str  # ISO time the schedule was saved: @every counts from it

    def schedule(self) -> cron.Schedule:
        return cron.parse(self.expression, self.timezone, anchor=datetime.fromisoformat(self.anchor))


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


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def entry_for(script: Script) -> Entry:
    anchor = db.session.scalar(
        select(ScriptVersion.created_at).where(
            ScriptVersion.script_id == script.id, ScriptVersion.version == script.version
        )
    )
    return Entry(
        script_id=str(script.id),
        version=script.version,
        expression=script.cron_expression or "",
        timezone=script.timezone,
        misfire_policy=script.misfire_policy or "run_once",
        anchor=(anchor or utcnow()).isoformat(),
    )


class CronScheduler:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._take_lapsed = redis.register_script(_TAKE_LAPSED)

    # -- changes from the script service ------------------------------------------------------
    def add_job(self, script: Script, after: datetime | None = None) -> datetime | None:
        """(Re)schedule a cron script from `after` (default now); returns its next fire."""
        entry = entry_for(script)
        try:
            fire = entry.schedule().next_after(after or utcnow())
        except cron.CronError as exc:  # stored before a validation change: do not fire it
            log.warning("not scheduling script %s: %s", script.id, exc)
            self.remove_job(script.id)
            return None
        pipe = self.redis.pipeline()
        pipe.hset(ENTRIES_KEY, entry.script_id, json.dumps(asdict(entry)))
        pipe.zadd(DUE_KEY, {entry.script_id: to_ms(fire)})
        pipe.publish(CHANGED_CHANNEL, entry.script_id)
        pipe.execute()
        return fire

    def update_job(self, script: Script) -> None:
        if script.type == "cron" and script.status == "active":
            current = self.entry(str(script.id))
            if current is None or current.version != script.version:
                self.add_job(script)
        else:
            self.remove_job(script.id)

    def remove_job(self, script_id: object) -> None:
        pipe = self.redis.pipeline()
        pipe.hdel(ENTRIES_KEY, str(script_id))
        pipe.zrem(DUE_KEY, str(script_id))
        pipe.publish(CHANGED_CHANNEL, str(script_id))
        pipe.execute()

    # -- reading the schedule -------------------------------------------------------------
    def entry(self, script_id: str) -> Entry | None:
        return self.entries([script_id])[script_id]

    def entries(self, script_ids: list[str]) -> dict[str, Entry | None]:
        raws = self.redis.hmget(ENTRIES_KEY, script_ids) if script_ids else []
        return {sid: Entry(**json.loads(raw)) if raw else None for sid, raw in zip(script_ids, raws, strict=True)}

    def next_fire(self, script_id: str) -> datetime | None:
        score = self.redis.zscore(DUE_KEY, script_id)
        return from_ms(score) if score is not None else None

    def next_fires(self, script_ids: list[str]) -> dict[str, datetime | None]:
        if not script_ids:
            return {}
        scores = self.redis.zmscore(DUE_KEY, script_ids)
        return {sid: from_ms(s) if s is not None else None for sid, s in zip(script_ids, scores, strict=True)}

    def due(self, now_ms: int, limit: int = 1000) -> list[tuple[str, int]]:
        rows = self.redis.zrangebyscore(DUE_KEY, "-inf", now_ms, start=0, num=limit, withscores=True)
        return [(sid.decode(), int(score)) for sid, score in rows]

    def earliest_due_ms(self) -> int | None:
        first = self.redis.zrange(DUE_KEY, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def next_wake_ms(self) -> int | None:
        """When the scheduler has work next: a fire falls due, or a claim lapses."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(DUE_KEY, 0, 0, withscores=True)
        pipe.zrange(CLAIMED_KEY, 0, 0, withscores=True)
        times = [int(first[0][1]) for first in pipe.execute() if first]
        return min(times) if times else None

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

    def take_lapsed_claims(self, now_ms: int, limit: int = 1000) -> list[ClaimedFire]:
        """Claimed fires still unrecorded after their lease (their scheduler died, or stalls),
        now claimed by the caller: no other scheduler takes them before this lease lapses."""
        lapse_ms = now_ms + int(CLAIM_LEASE_SECONDS * 1000)
        members = self._take_lapsed(keys=[CLAIMED_KEY], args=[now_ms, lapse_ms, limit])
        return [ClaimedFire.parse(member.decode()) for member in members]

    # -- reconciling with the database ------------------------------------------------------
    def start(self) -> dict[str, int]:
        """Make the schedule match the database: add missing, update changed, drop stale."""
        scripts = list(db.session.scalars(select(Script).where(Script.type == "cron", Script.status == "active")))
        wanted = {str(s.id): s for s in scripts}
        stored = {k.decode(): Entry(**json.loads(v)) for k, v in self.redis.hgetall(ENTRIES_KEY).items()}
        counts = {"added": 0, "updated": 0, "removed": 0}
        for script_id in set(stored) - set(wanted):
            self.remove_job(script_id)
            counts["removed"] += 1
        for script_id in self.redis.zrange(DUE_KEY, 0, -1):
            if script_id.decode() not in wanted:
                self.redis.zrem(DUE_KEY, script_id)
        for script_id, script in wanted.items():
            entry = stored.get(script_id)
            in_due = self.redis.zscore(DUE_KEY, script_id) is not None
            if entry is not None and entry.version == script.version and in_due:
                continue
            # Missing (say, Redis lost it): continue from the last fire the database knows of,
            # so that fires missed meanwhile are still caught up by the misfire policy.
            last = db.session.scalar(
                select(func.max(Execution.scheduled_at)).where(
                    Execution.script_id == script.id, Execution.script_version == script.version
                )
            )
            self.add_job(script, after=last if entry is None or entry.version == script.version else None)
            counts["updated" if entry else "added"] += 1
        self.redis.set(RECONCILED_KEY, utcnow().isoformat())
        return counts

    def intact(self) -> bool:
        """False once Redis has lost the schedule (restarted without its data)."""
        return bool(self.redis.exists(RECONCILED_KEY))

    # -- health -----------------------------------------------------------------------------
    def beat(self, name: str, started_at: datetime) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(HEARTBEAT_KEY, name, time.time())
        pipe.hset(STARTED_KEY, name, started_at.timestamp())
        pipe.execute()

    def forget(self, name: str) -> None:
        self.redis.pipeline().hdel(HEARTBEAT_KEY, name).hdel(STARTED_KEY, name).execute()

    def others_beating(self, name: str, within: float = 2.5) -> bool:
        """Whether another scheduler beat lately (each beats at least once a second).

        A killed scheduler's last beat stays behind: one restarted at once would take it for a
        live scheduler and fire what was missed one by one instead of collapsing it. Beats of
        processes of this host that no longer exist therefore do not count (and are dropped).
        """
        now = time.time()
        beats = {k.decode(): float(v) for k, v in self.redis.hgetall(HEARTBEAT_KEY).items()}
        others = {n: t for n, t in beats.items() if n != name}
        gone = [n for n in others if _gone_from_this_host(n)]
        if gone:
            self.redis.pipeline().hdel(HEARTBEAT_KEY, *gone).hdel(STARTED_KEY, *gone).execute()
        return any(now - t < within for n, t in others.items() if n not in gone)

    def health(self) -> dict:
        """Schedulers seen lately, and how far behind the oldest due fire is."""
        try:
            beats = {k.decode(): float(v) for k, v in self.redis.hgetall(HEARTBEAT_KEY).items()}
            earliest = self.earliest_due_ms()
        except RedisError as exc:
            return {"running": False, "schedulers": 0, "lag_seconds": None, "error": f"Redis: {type(exc).__name__}"}
        now = time.time()
        alive = [n for n, t in beats.items() if now - t < HEARTBEAT_STALE_SECONDS]
        lag = max(0.0, now - earliest / 1000) if earliest is not None else 0.0
        last_beat = max(beats.values()) if beats else None
        return {
            "running": bool(alive),
            "schedulers": len(alive),
            "lag_seconds": round(lag, 3),
            "last_beat_seconds_ago": round(now - last_beat, 1) if last_beat else None,
            "error": None,
        }


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


def _on_saved(script: Script, **_: object) -> None:
    try:
        CronScheduler(get_redis()).update_job(script)
    except RedisError:
        log.warning("schedule of script %s not updated (Redis down); the scheduler will reconcile", script.id)


def _on_deleted(script: Script, script_id: object = None, **_: object) -> None:
    try:
        CronScheduler(get_redis()).remove_job(script_id or script.id)
    except RedisError:
        log.warning("schedule of script %s not removed (Redis down); the scheduler will reconcile", script_id)


def init_app(app: Flask) -> None:
    """Every script change reaches the schedule at once (the scheduler heals what is missed)."""
    from webapp.scripts.service import script_deleted, script_saved

    script_saved.connect(_on_saved)  # module-level receivers: connecting again is a no-op
    script_deleted.connect(_on_deleted)
