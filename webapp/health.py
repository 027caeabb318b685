"""GET /healthz: 200 when the database and Redis answer, 503 naming what is down."""

from flask import Blueprint, jsonify
from sqlalchemy import text

from webapp.extensions import db
from webapp.redis_client import get_redis

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    status = {"db": "ok", "redis": "ok"}
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:
        status["db"] = f"down: {type(exc).__name__}"
        db.session.rollback()
    try:
        get_redis().ping()
    except Exception as exc:
        status["redis"] = f"down: {type(exc).__name__}"
    healthy = all(value == "ok" for value in status.values())
    return jsonify(status), 200 if healthy else 503
