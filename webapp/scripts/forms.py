"""Reading the script edit form into the field dict that validation takes, and validation's
messages back onto the form's inputs."""

import math
from typing import Any

from werkzeug.datastructures import MultiDict

from webapp.limits import LIMIT_KEYS, LIMIT_LABELS, limits_message
from webapp.models import Script
from webapp.scripts.fields import SCRIPT_FIELDS
from webapp.scripts.starters import starter
from webapp.scripts.validation import ValidationFailed

FORM_FIELDS = tuple(field for field in SCRIPT_FIELDS if field.form)


def form_data(form: MultiDict) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in FORM_FIELDS:
        if field.form == "limits":
            data[field.name] = _limits(form, field.name)
        elif field.name in form and field.form == "textarea":
            # Browsers send CRLF line ends in textareas; keep sources in LF so versions diff cleanly.
            data[field.name] = form[field.name].replace("\r\n", "\n")
        elif field.name in form:
            data[field.name] = form[field.name]
    return data


def form_errors(exc: ValidationFailed) -> dict[str, str]:
    """The messages by form input: each bad limit beside its own `limits_<key>` input, named
    by its label; a problem with the limits as a whole stays under `limits`."""
    errors = dict(exc.fields)
    if exc.limits and "" not in exc.limits:
        del errors["limits"]
        for key, problem in exc.limits.items():
            errors[f"limits_{key}"] = limits_message({key: problem}, LIMIT_LABELS)
    return errors


def _limits(form: MultiDict, name: str) -> dict[str, Any] | None:
    limits: dict[str, Any] = {}
    for key in LIMIT_KEYS:
        raw = form.get(f"{name}_{key}", "").strip()
        if raw:
            limits[key] = _number(raw)
    return limits or None


def _number(raw: str) -> Any:
    try:
        value = float(raw)
    except ValueError:
        return raw  # validation names it: "must be a number"
    if not math.isfinite(value):
        return raw
    return int(value) if value.is_integer() else value


def initial_values(script: Script | None, type_: str = "manual") -> dict[str, Any]:
    if script is None:
        return {
            **{field.name: field.default for field in SCRIPT_FIELDS if field.form and field.default is not None},
            "type": type_,
            "endpoint_method": "GET",
            "source": starter(type_),
            "limits": None,
        }
    return {field.name: getattr(script, field.name) for field in FORM_FIELDS}
