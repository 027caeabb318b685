"""JSON shapes of scripts, versions, executions and secrets (the fields of docs/api.md); a script's and
a version's come from the fields of webapp/scripts/fields.py."""

from datetime import datetime
from typing import Any

from webapp.models import AuditEntry, Execution, Script, ScriptVersion, Secret
from webapp.scripts.fields import FIELDS, SCRIPT_FIELDS, VERSION_JSON_FIELDS, ScriptField


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def script_json(script: Script) -> dict[str, Any]:
    return {field.name: _value(field, getattr(script, field.name)) for field in SCRIPT_FIELDS}


def version_json(version: ScriptVersion) -> dict[str, Any]:
    return {name: _value(FIELDS[name], getattr(version, name)) for name in VERSION_JSON_FIELDS}


def _value(field: ScriptField, value: Any) -> Any:
    if value is None:
        return None
    if field.shows:
        return getattr(value, field.shows)
    if field.format == "date-time":
        return iso(value)
    if field.format == "uuid":
        return str(value)
    return value


def execution_json(execution: Execution) -> dict[str, Any]:
    return {
        "id": str(execution.id),
        "script_id": str(execution.script_id),
        "script_version": execution.script_version,
        "trigger": execution.trigger,
        "scheduled_at": iso(execution.scheduled_at),
        "status": execution.status,
        "error_kind": execution.error_kind,
        "error_message": execution.error_message,
        "params": execution.params,
        "result": execution.result,
        "logs": execution.logs or [],
        "queued_at": iso(execution.queued_at),
        "started_at": iso(execution.started_at),
        "finished_at": iso(execution.finished_at),
        "duration_ms": execution.duration_ms,
        "worker": execution.worker,
        "runtime": execution.runtime_info,
        "http_summary": execution.http_summary,  # endpoint calls: method, path, status, sizes
        "secrets_read": execution.secrets_read,  # names, never values
        "http_calls": execution.http_calls or [],  # its fetches: method, URL without query, outcome
        "source": execution.source,  # drafts: the unsaved source it ran
    }


def secret_json(secret: Secret, names_only: bool = False) -> dict[str, Any]:
    """A secret as lists show it: never its value; viewers get its name alone."""
    if names_only:
        return {"name": secret.name}
    return {
        "name": secret.name,
        "created_at": iso(secret.created_at),
        "updated_at": iso(secret.updated_at),
        "updated_by": secret.updated_by.email if secret.updated_by else None,
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "time": iso(entry.created_at),
        "actor": {
            "type": entry.actor_type,
            "label": entry.actor_label,
            "user_id": entry.actor_user_id,
            "token_id": entry.actor_token_id,
            "token_label": entry.actor_token_label,
        },
        "action": entry.action,
        "target": {
            "type": entry.target_type,
            "id": entry.target_id,
            "label": entry.target_label,
            "version": entry.target_version,
        },
        "address": entry.address,
        "user_agent": entry.user_agent,
        "changes": entry.changes,
    }
