"""POST /api/v1/cron/validate: is an expression valid, what does it mean, when does it fire."""

from datetime import datetime

from webapp import cron
from webapp.api.blueprint import bp
from webapp.api.helpers import json_body
from webapp.models import utcnow
from webapp.serializers import iso


def describe(expression: object, timezone: object, anchor: datetime | None = None) -> dict:
    """The validate answer; also the script page's schedule (`anchor`: when it was saved)."""
    if not isinstance(expression, str) or not isinstance(timezone, str | None):
        return {"valid": False, "description": None, "next": [], "error": "expression and timezone must be strings"}
    try:
        schedule = cron.parse(expression, timezone or "UTC", anchor=anchor)
    except cron.CronError as exc:
        return {"valid": False, "description": None, "next": [], "error": str(exc)}
    fires = schedule.next_fires(utcnow(), 5)
    return {"valid": True, "description": schedule.description, "next": [iso(f) for f in fires], "error": None}


@bp.post("/cron/validate")
def validate_cron():
    body = json_body()
    return describe(body.get("expression"), body.get("timezone", "UTC"))
