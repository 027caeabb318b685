"""What the UI shows of each cron script's schedule: next fire, last fire and its outcome."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, select

from webapp.cron import describe, uses_anchor
from webapp.cron_registry import CronRegistry
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion
from webapp.redis_client import get_redis
from webapp.scripts.queries import executions_stmt
from webapp.scripts.validation import path_params


@dataclass
class CronStatus:
    next_fire: datetime | None  # None: not scheduled (disabled, or the schedule is unreachable)
    last: Execution | None  # the latest fire, with its outcome
    schedule_known: bool = True  # False when Redis could not be asked


def cron_status(scripts: list[Script]) -> dict[uuid.UUID, CronStatus]:
    crons = [s for s in scripts if s.type == "cron"]
    if not crons:
        return {}
    try:
        nexts = CronRegistry(get_redis()).next_fires([str(s.id) for s in crons])
        known = True
    except RedisError:
        nexts, known = {}, False
    latest = (
        select(Execution.script_id, func.max(Execution.scheduled_at).label("at"))
        .where(Execution.script_id.in_([s.id for s in crons]), Execution.scheduled_at.is_not(None))
        .group_by(Execution.script_id)
        .subquery()
    )
    lasts = {
        e.script_id: e
        for e in db.session.scalars(
            select(Execution).join(
                latest, (Execution.script_id == latest.c.script_id) & (Execution.scheduled_at == latest.c.at)
            )
        )
    }
    return {s.id: CronStatus(nexts.get(str(s.id)), lasts.get(s.id), known) for s in crons}


def latest_executions(script: Script, count: int = 20) -> list[Execution]:
    """The script page's "Latest executions" (one query: the page polls it)."""
    return list(db.session.scalars(executions_stmt(script).limit(count)))


def schedule_facts(script: Script) -> dict[str, Any]:
    """The script page's Schedule card: what the expression means, the next and last fire, the
    fires to come. The page polls it, so it asks Redis once and the database once, twice for
    @every (its fires count from when the version was saved)."""
    if script.type != "cron":
        return {"cron_info": None, "cron_status": None}
    anchor = None
    if uses_anchor(script.cron_expression or ""):
        anchor = db.session.scalar(
            select(ScriptVersion.created_at).where(
                ScriptVersion.script_id == script.id, ScriptVersion.version == script.version
            )
        )
    return {
        "cron_info": describe(script.cron_expression, script.timezone, anchor=anchor),
        "cron_status": cron_status([script]).get(script.id),
    }


def script_page(script: Script) -> dict[str, Any]:
    """Everything the script page template needs besides the script itself."""
    context: dict[str, Any] = {"executions": latest_executions(script), **schedule_facts(script)}
    if script.type == "endpoint":
        context["path_params"] = path_params(script.endpoint_path or "")
    return context
