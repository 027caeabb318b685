"""The dashboard: what the tenant has and what ran lately."""

from flask import Blueprint, render_template
from flask_login import login_required
from redis.exceptions import RedisError
from rq import Queue, Worker
from sqlalchemy import func

from webapp.auth.identity import current_principal
from webapp.executions.service import QUEUES
from webapp.extensions import db
from webapp.models import Script
from webapp.permissions import require
from webapp.redis_client import get_redis
from webapp.scheduling import CronScheduler
from webapp.scripts.queries import executions_stmt
from webapp.tenancy import scoped

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@login_required
def index():
    if current_principal() is None:
        return render_template("no_tenant.html"), 403
    return _dashboard()


@require("scripts:read")
def _dashboard():
    counts_stmt = (
        scoped(Script).with_only_columns(Script.type, Script.status, func.count()).group_by(Script.type, Script.status)
    )
    counts = {(t, s): n for t, s, n in db.session.execute(counts_stmt)}
    recent = list(db.session.scalars(executions_stmt().limit(10)))
    scheduler = CronScheduler(get_redis()).health()
    return render_template("dashboard.html", counts=counts, recent=recent, scheduler=scheduler, workers=_workers())


def _workers() -> dict:
    try:
        redis = get_redis()
        queued = {name: Queue(name, connection=redis).count for name in QUEUES}
        return {"count": Worker.count(connection=redis), "queued": queued, "error": None}
    except RedisError as exc:
        return {"count": 0, "queued": {}, "error": f"Redis: {type(exc).__name__}"}
