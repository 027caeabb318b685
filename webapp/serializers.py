"""JSON shapes of scripts, versions and executions (field names of SPEC §4–5)."""

from datetime import datetime
from typing import Any

from webapp.models import Execution, Script, ScriptVersion, User


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _email(user: User | None) -> str | None:
    return user.email if user else None


def script_json(script: Script) -> dict[str, Any]:
    return {
        "id": str(script.id),
        "tenant": script.tenant.name,
        "name": script.name,
        "description": script.description,
        "type": script.type,
        "source": script.source,
        "status": script.status,
        "cron_expression": script.cron_expression,
        "timezone": script.timezone,
        "endpoint_path": script.endpoint_path,
        "endpoint_method": script.endpoint_method,
        "misfire_policy": script.misfire_policy,
        "limits": script.limits,
        "version": script.version,
        "created_at": iso(script.created_at),
        "updated_at": iso(script.updated_at),
        "created_by": _email(script.created_by),
        "updated_by": _email(script.updated_by),
    }


def version_json(version: ScriptVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "type": version.type,
        "source": version.source,
        "cron_expression": version.cron_expression,
        "timezone": version.timezone,
        "endpoint_path": version.endpoint_path,
        "endpoint_method": version.endpoint_method,
        "misfire_policy": version.misfire_policy,
        "limits": version.limits,
        "created_at": iso(version.created_at),
        "created_by": _email(version.created_by),
    }


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
    }
