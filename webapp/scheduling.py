"""The cron schedule: which cron script fires next and when, kept in Redis.

The database is the source of truth; this is its index for the scheduler process. Web
processes call add_job / update_job / remove_job (through the script service's signals) so a
change reaches the scheduler at once (a Redis write plus a wake-up message); the scheduler
reconciles with the database at start and every RECONCILE_SECONDS, which heals anything a
Redis outage made it miss.

Entries: a hash script id -> {version, expression, timezone, misfire_policy, anchor}, and a
sorted set script id -> due time in epoch milliseconds.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

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
HEARTBEAT_KEY = "sr:scheduler:heartbeat"  # hash: scheduler name -> last beat (epoch seconds)
STARTED_KEY = "sr:scheduler:started"  # hash: scheduler name -> when it started (epoch seconds)
HEARTBEAT_STALE_SECONDS = 10
MISFIRE_GRACE_SECONDS = 5  # a fire this late was missed (no scheduler ran), not merely slow
MAX_CATCH_UP_STEPS = 1_000_000

# Move each due entry (id, due, next) to its next time only if no other scheduler did it
# first; returns 1/0 per entry. One round trip for a whole tick.
_CLAIM = """
local won = {}
for i = 1, #ARGV, 3 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
    won[#won + 1] = 1
  else
    won[#won + 1] = 0
  end
end
return won
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

    def claim(self, moves: list[tuple[str, int, int]]) -> list[bool]:
        """Move each (script id, due ms, next ms); True where this scheduler won the fire."""
        if not moves:
            return []
        return [bool(w) for w in self._claim(keys=[DUE_KEY], args=[x for move in moves for x in move])]

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
        """Whether another scheduler beat lately (each beats at least once a second)."""
        now = time.time()
        beats = self.redis.hgetall(HEARTBEAT_KEY)
        return any(k.decode() != name and now - float(v) < within for k, v in beats.items())

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


def latest_fire_at_or_before(schedule: cron.Schedule, first: datetime, now: datetime) -> datetime:
    """The last fire time <= now, starting from a fire time `first` <= now."""
    latest = first
    for _ in range(MAX_CATCH_UP_STEPS):
        following = schedule.next_after(latest)
        if following > now:
            return latest
        latest = following
    return latest


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
