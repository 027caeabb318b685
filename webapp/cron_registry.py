"""The cron registry: each active cron script's schedule entry and next fire, kept in Redis.

Web processes and schedulers share it (docs/architecture.md, "A cron fire"). The database is
the source of truth; this is its index. A web process puts or removes a script's entry as
the script is saved or deleted (a Redis write plus a wake-up message on CHANGED_CHANNEL); the
scheduler reconciles it with the database at start and every 30 seconds, which heals anything
a Redis outage made a web process miss. The scheduler's own machinery (claims, leases,
catch-up, recording fires) lives in worker/scheduler.py.

Keys: a hash script id -> Entry (JSON), and a sorted set script id -> next fire in epoch
milliseconds. Schedulers beat into HEARTBEAT_KEY; health() reads it for the dashboard and
/metrics.
"""

import json
import logging
import time
import uuid
from collections.abc import Iterator
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
from webapp.scripts.service import script_deleted, script_saved

log = logging.getLogger(__name__)
DUE_KEY = "sr:cron:due"
ENTRIES_KEY = "sr:cron:entries"
CHANGED_CHANNEL = "sr:cron:changed"
RECONCILED_KEY = "sr:cron:reconciled"  # set by each reconcile: gone means Redis lost the registry
HEARTBEAT_KEY = "sr:scheduler:heartbeat"  # hash: scheduler name -> last beat (epoch seconds)
HEARTBEAT_STALE_SECONDS = 10


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


class CronRegistry:
    def __init__(self, redis: Redis):
        self.redis = redis

    # -- writing ------------------------------------------------------------------------------
    def put(self, script: Script, after: datetime | None = None) -> datetime | None:
        """(Re)schedule a cron script from `after` (default now); returns its next fire."""
        entry = entry_for(script)
        try:
            fire = entry.schedule().next_after(after or utcnow())
        except cron.CronError as exc:  # stored before a validation change: do not fire it
            log.warning("not scheduling script %s: %s", script.id, exc)
            self.remove(script.id)
            return None
        pipe = self.redis.pipeline()
        pipe.hset(ENTRIES_KEY, entry.script_id, json.dumps(asdict(entry)))
        pipe.zadd(DUE_KEY, {entry.script_id: to_ms(fire)})
        pipe.publish(CHANGED_CHANNEL, entry.script_id)
        pipe.execute()
        return fire

    def sync(self, script: Script) -> None:
        """After a save: put the script if it fires and its entry is not of this version, else
        remove it."""
        if script.type == "cron" and script.status == "active":
            current = self.entries([str(script.id)])[str(script.id)]
            if current is None or current.version != script.version:
                self.put(script)
        else:
            self.remove(script.id)

    def remove(self, script_id: object) -> None:
        pipe = self.redis.pipeline()
        pipe.hdel(ENTRIES_KEY, str(script_id))
        pipe.zrem(DUE_KEY, str(script_id))
        pipe.publish(CHANGED_CHANNEL, str(script_id))
        pipe.execute()

    # -- reading ------------------------------------------------------------------------------
    def entries(self, script_ids: list[str]) -> dict[str, Entry | None]:
        raws = self.redis.hmget(ENTRIES_KEY, script_ids) if script_ids else []
        return {sid: Entry(**json.loads(raw)) if raw else None for sid, raw in zip(script_ids, raws, strict=True)}

    def next_fires(self, script_ids: list[str]) -> dict[str, datetime | None]:
        if not script_ids:
            return {}
        scores = self.redis.zmscore(DUE_KEY, script_ids)
        return {sid: from_ms(s) if s is not None else None for sid, s in zip(script_ids, scores, strict=True)}

    def due(self, now_ms: int, limit: int = 1000) -> list[tuple[str, int]]:
        """(script id, due ms) of the entries due by now_ms, earliest first."""
        rows = self.redis.zrangebyscore(DUE_KEY, "-inf", now_ms, start=0, num=limit, withscores=True)
        return [(sid.decode(), int(score)) for sid, score in rows]

    def earliest_due_ms(self) -> int | None:
        first = self.redis.zrange(DUE_KEY, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    # -- reconciling with the database --------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Make the registry match the database: add missing, update changed, drop stale.

        A few round trips and one query whatever the number of scripts: only the scripts to
        add or update are loaded whole (all of them when Redis lost the registry)."""
        active = select(Script.id, Script.version).where(Script.type == "cron", Script.status == "active")
        wanted = {str(sid): version for sid, version in db.session.execute(active)}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(ENTRIES_KEY)
        pipe.zrange(DUE_KEY, 0, -1)
        raw_entries, raw_due = pipe.execute()
        stored = {k.decode(): json.loads(v)["version"] for k, v in raw_entries.items()}
        in_due = {sid.decode() for sid in raw_due}
        counts = {"added": 0, "updated": 0, "removed": 0}
        for script_id in set(stored) - set(wanted):
            self.remove(script_id)
            counts["removed"] += 1
        if in_due - set(wanted):
            self.redis.zrem(DUE_KEY, *(in_due - set(wanted)))
        stale = [sid for sid, version in wanted.items() if stored.get(sid) != version or sid not in in_due]
        for script in self._scripts(stale):
            # Missing (say, Redis lost it): continue from the last fire the database knows of,
            # so that fires missed meanwhile are still caught up by the misfire policy.
            last = db.session.scalar(
                select(func.max(Execution.scheduled_at)).where(
                    Execution.script_id == script.id, Execution.script_version == script.version
                )
            )
            stored_version = stored.get(str(script.id))
            self.put(script, after=last if stored_version in (None, script.version) else None)
            counts["updated" if stored_version is not None else "added"] += 1
        self.redis.set(RECONCILED_KEY, utcnow().isoformat())
        return counts

    @staticmethod
    def _scripts(ids: list[str], chunk: int = 500) -> Iterator[Script]:
        for start in range(0, len(ids), chunk):
            wanted = [uuid.UUID(sid) for sid in ids[start : start + chunk]]
            yield from list(db.session.scalars(select(Script).where(Script.id.in_(wanted))))

    def intact(self) -> bool:
        """False once Redis has lost the registry (restarted without its data)."""
        return bool(self.redis.exists(RECONCILED_KEY))

    # -- health -------------------------------------------------------------------------------
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


def _on_saved(script: Script, **_: object) -> None:
    try:
        CronRegistry(get_redis()).sync(script)
    except RedisError:
        log.warning("schedule of script %s not updated (Redis down); the scheduler will reconcile", script.id)


def _on_deleted(script: Script, script_id: object = None, **_: object) -> None:
    try:
        CronRegistry(get_redis()).remove(script_id or script.id)
    except RedisError:
        log.warning("schedule of script %s not removed (Redis down); the scheduler will reconcile", script_id)


def init_app(app: Flask) -> None:
    """Every script change reaches the registry at once (the scheduler heals what is missed)."""
    script_saved.connect(_on_saved)  # module-level receivers: connecting again is a no-op
    script_deleted.connect(_on_deleted)
