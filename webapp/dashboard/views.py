"""The dashboard: what the tenant has, how its runs went lately, and whether the platform is
healthy (scheduler, workers and queues are shared by every tenant: operator information).

The page works without JavaScript; with htmx, the window selector and a refresh every 30 s
swap only the `dashboard-live` part.
"""

import time

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from redis.exceptions import RedisError
from rq import Queue, Worker
from sqlalchemy import func

from webapp import htmx, quotas
from webapp.auth.identity import current_principal, must_choose_tenant
from webapp.cron_registry import CronRegistry
from webapp.dashboard import charts, stats
from webapp.executions.service import QUEUES
from webapp.extensions import db
from webapp.fairness import RUNS, WORKER_SLOTS
from webapp.models import Script, utcnow
from webapp.permissions import can, require
from webapp.redis_client import get_redis
from webapp.scripts.queries import executions_stmt
from webapp.tenancy import current_tenant, scoped

bp = Blueprint("dashboard", __name__)
LIVE_TARGET = "dashboard-live"


@bp.get("/")
@login_required
def index():
    if current_principal() is None:
        if must_choose_tenant(current_user):
            return redirect(url_for("auth.choose_tenant"))
        return render_template("no_tenant.html"), 403
    return _dashboard()


@require("scripts:read")
def _dashboard():
    window = stats.WINDOWS.get(request.args.get("window", ""), stats.WINDOWS[stats.DEFAULT_WINDOW])
    tenant_id = current_tenant().id
    overview = stats.overview(tenant_id, window, utcnow())
    counts_stmt = (
        scoped(Script).with_only_columns(Script.type, Script.status, func.count()).group_by(Script.type, Script.status)
    )
    context = {
        "window": window,
        "windows": stats.WINDOWS.values(),
        "overview": overview,
        "chart": charts.runs_chart(overview.periods, window),
        "share": charts.share,
        "failures": stats.recent_failures(tenant_id),
        "counts": {(t, s): n for t, s, n in db.session.execute(counts_stmt)},
        "recent": list(db.session.scalars(executions_stmt().limit(10))),
        "scheduler": CronRegistry(get_redis()).health(),
        "workers": _workers(tenant_id),
    }
    if htmx.target() == LIVE_TARGET:
        return render_template("dashboard/_live.html", **context)
    # Admins see a tenant near its quotas here first (webapp/quotas.py).
    usage_warnings = quotas.report(tenant_id, count_executions=False).warnings if can("usage:read") else []
    return render_template("dashboard/index.html", usage_warnings=usage_warnings, **context)


def _workers(tenant_id: int) -> dict:
    """Live workers, their run slots (WORKER_CONCURRENCY each), and this tenant's own runs in
    flight against its cap: whether, or how many, runs other tenants have in flight is theirs
    to know, not this one's (so no busy/idle count per worker)."""
    try:
        redis = get_redis()
        queued = {name: Queue(name, connection=redis).count for name in QUEUES}
        names = [w.name for w in Worker.all(connection=redis)]
        slots = sum(int(n or 1) for n in (redis.hmget(WORKER_SLOTS, names) if names else []))
        mine = redis.zcount(RUNS.format(tenant_id), time.time(), "+inf")
    except RedisError as exc:
        return {"count": 0, "queued": {}, "error": f"Redis: {type(exc).__name__}"}
    fixed = current_app.config["SETTINGS"].tenants.max_runs
    return {
        "count": len(names),
        "slots": slots,
        "mine": mine,
        "cap": fixed or max(1, slots // 2),
        "queued": queued,
        "error": None,
    }
