"""POST /api/v1/cron/validate: is an expression valid, what does it mean, when does it fire."""

from webapp import cron
from webapp.api.blueprint import bp
from webapp.api.helpers import json_body


@bp.post("/cron/validate")
def validate_cron():
    body = json_body()
    return cron.describe(body.get("expression"), body.get("timezone", "UTC"))
