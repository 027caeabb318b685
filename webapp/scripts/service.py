"""Script lifecycle: create, update, enable/disable, delete, rollback, each versioned.

The cron registry and the endpoint router subscribe to the signals below, so that saving a
script reaches them without the views knowing of either.
"""

import uuid
from collections.abc import Mapping
from typing import Any

from blinker import Namespace
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp import quotas
from webapp.audit.log import record, script_target
from webapp.extensions import db
from webapp.models import Script, ScriptVersion, Tenant, User, utcnow
from webapp.scripts.fields import SCRIPT_STATUSES, VERSIONED_FIELDS
from webapp.scripts.validation import ValidationFailed, route_key, validate

_signals = Namespace()
# sender: the Script after commit
script_saved = _signals.signal("script-saved")
# sender: the Script's last state, already deleted from the database; script_id=its id
script_deleted = _signals.signal("script-deleted")


class QuotaReached(ValidationFailed):
    """The tenant has as many scripts as TENANT_MAX_SCRIPTS allows: 422 `quota_exceeded`."""

    def __init__(self, exceeded: quotas.QuotaExceeded):
        super().__init__({"quota": exceeded.message})
        self.message = exceeded.message
        self.quota = {"name": exceeded.name, "limit": exceeded.limit, "used": exceeded.used}


def _limits_defaults():
    return current_app.config["SETTINGS"].limits


def create_script(tenant: Tenant, user: User | None, data: Mapping[str, Any]) -> Script:
    values = validate(data, tenant.id, _limits_defaults())
    try:
        quotas.reserve_script(tenant.id)  # the tenant's creates queue here until this one commits
    except quotas.QuotaExceeded as exc:
        db.session.rollback()
        raise QuotaReached(exc) from exc
    script = Script(id=uuid.uuid4(), tenant=tenant, created_by=user, updated_by=user, version=1)
    _apply(script, values)
    script.versions.append(_snapshot(script, user))
    db.session.add(script)
    record(tenant.id, "script.create", script_target(script, 1), {"version": {"old": None, "new": 1}})
    _commit()
    script_saved.send(script)
    return script


def update_script(
    script: Script, user: User | None, data: Mapping[str, Any], action: str = "script.update", **summary: Any
) -> Script:
    """Save the changed fields; a new version when a versioned one changed. `action` and
    `summary` are what the audit entry says besides the fields (a rollback's)."""
    if set(data) == {"status"}:
        return set_status(script, user, data["status"])
    db.session.refresh(script, with_for_update=True)  # PostgreSQL: edits of one script queue up
    values = validate(data, script.tenant_id, _limits_defaults(), existing=script)
    versioned_change = any(getattr(script, f) != values[f] for f in VERSIONED_FIELDS)
    if not versioned_change and all(getattr(script, k) == v for k, v in values.items()):
        return script
    changed = sorted(k for k, v in values.items() if getattr(script, k) != v)
    if changed == ["status"]:  # the form's Status select alone: as the switch, script.enable/disable
        return set_status(script, user, values["status"])
    if "status" in changed:
        summary["status"] = {"old": script.status, "new": values["status"]}
    old_version = script.version
    _apply(script, values)
    script.updated_by = user
    script.updated_at = utcnow()
    if versioned_change:
        script.version += 1
        script.versions.append(_snapshot(script, user))
    versions = {"old": old_version, "new": script.version}
    target = script_target(script, script.version if versioned_change else None)
    record(script.tenant_id, action, target, {"fields": changed, "version": versions, **summary})
    _commit()
    script_saved.send(script)
    return script


def set_status(script: Script, user: User | None, status: str) -> Script:
    """Enable or disable as it is: a script that no longer validates can still be switched off."""
    if status not in SCRIPT_STATUSES:
        raise ValidationFailed({"status": f"must be one of {', '.join(SCRIPT_STATUSES)}"})
    db.session.refresh(script, with_for_update=True)  # PostgreSQL: two switches at once, one change, one entry
    if script.status != status:
        action = "script.enable" if status == "active" else "script.disable"
        record(script.tenant_id, action, script_target(script), {"status": {"old": script.status, "new": status}})
        script.status, script.updated_by, script.updated_at = status, user, utcnow()
        _commit()
        script_saved.send(script)
    return script


def delete_script(script: Script) -> None:
    script_id, tenant_id = script.id, script.tenant_id
    record(tenant_id, "script.delete", script_target(script), {"version": {"old": script.version, "new": None}})
    db.session.delete(script)
    db.session.commit()
    quotas.recount(tenant_id)  # its executions went by cascade, uncounted
    db.session.commit()
    script_deleted.send(script, script_id=script_id)


def rollback(script: Script, user: User | None, version: int) -> Script:
    """Restore an earlier version's source and settings, as a new version."""
    old = version_of(script, version)
    if old is None:
        raise ValidationFailed({"version": f"version {version} does not exist"}, status=404)
    data = {f: getattr(old, f) for f in VERSIONED_FIELDS}
    return update_script(script, user, data, "script.rollback", restored_version=version)


def version_of(script: Script, version: int) -> ScriptVersion | None:
    return db.session.scalar(
        select(ScriptVersion).where(ScriptVersion.script_id == script.id, ScriptVersion.version == version)
    )


def _apply(script: Script, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        setattr(script, key, value)
    script.endpoint_route = route_key(script.endpoint_path) if script.type == "endpoint" else None


def _snapshot(script: Script, user: User | None) -> ScriptVersion:
    return ScriptVersion(version=script.version, created_by=user, **{f: getattr(script, f) for f in VERSIONED_FIELDS})


def _commit() -> None:
    try:
        db.session.commit()
    except IntegrityError as exc:
        # Two writers raced past validation; the database's unique constraints decide.
        db.session.rollback()
        raise ValidationFailed(_clash(str(exc.orig)), status=409) from exc


def _clash(error: str) -> dict[str, str]:
    """Which unique constraint refused the write (PostgreSQL names it, SQLite lists columns)."""
    if "uq_scripts_tenant_route" in error or "scripts.endpoint_route" in error:
        return {"endpoint_path": "this method and path were taken at the same moment by another script"}
    if "uq_scripts_tenant_name" in error or "scripts.name" in error:
        return {"name": "this name was taken at the same moment by another script"}
    return {"version": "the script was changed at the same moment by someone else: reload and try again"}
