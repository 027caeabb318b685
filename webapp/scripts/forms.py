"""Reading the script edit form into the field dict that validation takes."""

import math
from typing import Any

from werkzeug.datastructures import MultiDict

from webapp.limits import LIMIT_KEYS
from webapp.models import Script

FORM_FIELDS = (
    "name",
    "description",
    "type",
    "source",
    "status",
    "cron_expression",
    "timezone",
    "misfire_policy",
    "endpoint_path",
    "endpoint_method",
)
DEFAULT_SOURCE = """async function main(event) {
  console.log("hello from", context.script.name);
  return { ok: true, event };
}
"""


def form_data(form: MultiDict) -> dict[str, Any]:
    data: dict[str, Any] = {k: form[k] for k in FORM_FIELDS if k in form}
    # Browsers send CRLF line ends in textareas; keep sources in LF so versions diff cleanly.
    if "source" in data:
        data["source"] = data["source"].replace("\r\n", "\n")
    limits: dict[str, Any] = {}
    for key in LIMIT_KEYS:
        raw = form.get(f"limits_{key}", "").strip()
        if raw:
            limits[key] = _number(raw)
    data["limits"] = limits or None
    return data


def _number(raw: str) -> Any:
    try:
        value = float(raw)
    except ValueError:
        return raw  # validation names it: "must be a number"
    if not math.isfinite(value):
        return raw
    return int(value) if value.is_integer() else value


def initial_values(script: Script | None) -> dict[str, Any]:
    if script is None:
        return {
            "type": "manual",
            "status": "active",
            "timezone": "UTC",
            "misfire_policy": "run_once",
            "endpoint_method": "GET",
            "source": DEFAULT_SOURCE,
            "limits": None,
        }
    values = {k: getattr(script, k) for k in FORM_FIELDS}
    values["limits"] = script.limits
    return values
