"""Validation of script fields: one function for the HTML form and the REST API alike."""

import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from webapp import cron
from webapp.extensions import db
from webapp.limits import DefaultLimits, limits_message, own_limits
from webapp.models import Script
from webapp.scripts.fields import (
    EDITABLE_FIELDS,
    FIELDS,
    HTTP_METHODS,
    MISFIRE_POLICIES,
    SCRIPT_FIELDS,
    SCRIPT_STATUSES,
    SCRIPT_TYPES,
)
from worker.runtime.source import check_syntax, defines_main

_UTC = FIELDS["timezone"].default
_MAX_LENGTH = {field.name: field.max_length for field in SCRIPT_FIELDS if field.max_length}
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+|\{[A-Za-z_][A-Za-z0-9_]*\}")  # fullmatch, as for every check here
NO_SOURCE = "is required: define a function main(event)"
_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class ValidationFailed(Exception):
    """Field messages; status 422 for invalid values, 409 for a uniqueness clash. `limits`
    holds own_limits' problems by limit key, from which fields["limits"] was written, so
    that the form can put each beside its own input."""

    def __init__(self, fields: dict[str, str], status: int = 422, limits: dict[str, str] | None = None):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields
        self.status = status
        self.limits = limits or {}


def current_values(script: Script) -> dict[str, Any]:
    return {name: getattr(script, name) for name in EDITABLE_FIELDS}


def validate(
    data: Mapping[str, Any], tenant_id: int, limits: DefaultLimits, existing: Script | None = None
) -> dict[str, Any]:
    """Merge `data` over the existing script's values and return the cleaned values."""
    unknown = sorted(set(data) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationFailed({key: "unknown field" for key in unknown})
    merged: dict[str, Any] = current_values(existing) if existing else {}
    merged.update(data)
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    def text(key: str, default: str | None = "") -> str | None:
        value = merged.get(key, default)
        if value is None:
            return default
        problem = text_problem(key, value)
        if problem:
            errors[key] = problem
        if not isinstance(value, str):
            return default
        return value.strip() if key != "source" else value

    out["name"] = text("name")
    if not out["name"] and "name" not in errors:
        errors["name"] = "is required"
    out["description"] = text("description")
    out["type"] = _choice(merged, "type", SCRIPT_TYPES, errors, default=None)
    out["status"] = _choice(merged, "status", SCRIPT_STATUSES, errors, default=FIELDS["status"].default)
    source = text("source") or ""
    out["source"] = source
    if "source" not in errors:
        errors.update(_source_errors(source))
    out["timezone"] = text("timezone", default=_UTC) or _UTC
    if "timezone" not in errors:
        try:
            cron.check_timezone(out["timezone"])
        except cron.CronError as exc:
            errors["timezone"] = str(exc)
    for key in ("cron_expression", "endpoint_path", "endpoint_method", "misfire_policy"):
        out[key] = None
    if out["type"] == "cron":
        _validate_cron(merged, out, errors)
    elif out["type"] == "endpoint":
        _validate_endpoint(merged, out, errors)
    out["limits"], limit_problems = own_limits(merged.get("limits"), limits)
    if limit_problems:
        errors["limits"] = limits_message(limit_problems)
    if errors:
        raise ValidationFailed(errors, limits=limit_problems)
    _check_unique(out, tenant_id, existing.id if existing else None)
    return out


def text_problem(key: str, value: Any) -> str | None:
    """Why a text field's value is refused (its type, its length), or None."""
    if not isinstance(value, str):
        return "must be a string"
    value = value.strip() if key != "source" else value
    if len(value) > _MAX_LENGTH[key]:
        return f"must be at most {_MAX_LENGTH[key]} characters"
    return None


def draft_source_problem(source: Any) -> str | None:
    """Why a draft's source is refused before it runs: what the form checks of a source, but
    its syntax, which the run itself reports (error kind `syntax`, with the line)."""
    problem = text_problem("source", source)
    if problem is None and not source.strip():
        return NO_SOURCE
    return problem


def _choice(
    merged: Mapping[str, Any], key: str, allowed: tuple[str, ...], errors: dict, default: str | None
) -> str | None:
    value = merged.get(key) or default
    if value not in allowed:
        errors[key] = f"must be one of {', '.join(allowed)}" if value else "is required"
        return None
    return value


def _source_errors(source: str) -> dict[str, str]:
    if not source.strip():
        return {"source": NO_SOURCE}
    problem = check_syntax(source)
    if problem is not None:
        return {"source": str(problem)}
    if not defines_main(source):
        return {"source": "must define a function main(event)"}
    return {}


def _validate_cron(merged: Mapping[str, Any], out: dict[str, Any], errors: dict[str, str]) -> None:
    expression = merged.get("cron_expression")
    if not isinstance(expression, str) or not expression.strip():
        errors["cron_expression"] = "is required for a cron script"
    elif len(expression.strip()) > _MAX_LENGTH["cron_expression"]:
        errors["cron_expression"] = f"must be at most {_MAX_LENGTH['cron_expression']} characters"
    else:
        out["cron_expression"] = expression.strip()
        timezone = _UTC if "timezone" in errors else out["timezone"]
        try:
            cron.parse(out["cron_expression"], timezone)
        except cron.CronError as exc:
            errors["cron_expression"] = str(exc)
    out["misfire_policy"] = _choice(
        merged, "misfire_policy", MISFIRE_POLICIES, errors, default=FIELDS["misfire_policy"].default
    )


def _validate_endpoint(merged: Mapping[str, Any], out: dict[str, Any], errors: dict[str, str]) -> None:
    method = merged.get("endpoint_method")
    out["endpoint_method"] = method.upper() if isinstance(method, str) else method
    out["endpoint_method"] = _choice(out, "endpoint_method", HTTP_METHODS, errors, default=None)
    path = merged.get("endpoint_path")
    if not isinstance(path, str) or not path.strip():
        errors["endpoint_path"] = "is required for an endpoint script"
        return
    path = path.strip()
    problem = path_problem(path)
    if problem:
        errors["endpoint_path"] = problem
    out["endpoint_path"] = path


def path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "must start with /"
    if len(path) > _MAX_LENGTH["endpoint_path"]:
        return f"must be at most {_MAX_LENGTH['endpoint_path']} characters"
    if path == "/":
        return None
    if path.endswith("/"):
        return "must not end with /"
    names: set[str] = set()
    for segment in path[1:].split("/"):
        if not segment:
            return "must not contain an empty segment (//)"
        if segment in (".", ".."):
            return "must not contain . or .. segments"
        if not _SEGMENT.fullmatch(segment):
            return (
                f"segment {segment!r} has characters not allowed in a path "
                "(use letters, digits, -._~ or a {name} parameter)"
            )
        if segment.startswith("{"):
            name = segment[1:-1]
            if name in names:
                return f"parameter {{{name}}} appears twice"
            names.add(name)
    return None


def path_params(path: str) -> list[str]:
    """The names of a path's {parameters}, in order: /orders/{id}/items/{item} -> id, item."""
    return [match[1:-1] for match in _PARAM.findall(path)]


def route_key(path: str) -> str:
    """The path with parameter names blanked: /orders/{id} and /orders/{oid} are one route."""
    return _PARAM.sub("{}", path)


def _check_unique(out: dict[str, Any], tenant_id: int, own_id: uuid.UUID | None) -> None:
    clashes: dict[str, str] = {}
    stmt = select(Script.id).where(Script.tenant_id == tenant_id, Script.name == out["name"])
    if own_id is not None:
        stmt = stmt.where(Script.id != own_id)
    if db.session.scalar(stmt) is not None:
        clashes["name"] = f"a script named {out['name']!r} already exists"
    if out["type"] == "endpoint":
        stmt = select(Script.name).where(
            Script.tenant_id == tenant_id,
            Script.endpoint_method == out["endpoint_method"],
            Script.endpoint_route == route_key(out["endpoint_path"]),
        )
        if own_id is not None:
            stmt = stmt.where(Script.id != own_id)
        other = db.session.scalar(stmt)
        if other is not None:
            clashes["endpoint_path"] = (
                f"{out['endpoint_method']} {out['endpoint_path']} is already served by script {other!r}"
            )
    if clashes:
        raise ValidationFailed(clashes, status=409)
