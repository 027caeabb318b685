"""Helpers shared by the storage browser's tests: keys written as scripts write them, through
the worker's host API (so sizes and the quota counter are what a run would leave)."""

import json
from datetime import timedelta
from typing import Any

from flask import Flask

from webapp.extensions import db
from webapp.models import StorageItem, Tenant, utcnow
from worker.host_api import HostApi


def tenant_id(app: Flask, name: str) -> int:
    with app.app_context():
        return db.session.scalar(db.select(Tenant.id).where(Tenant.name == name))


def store(app: Flask, tenant: str, items: dict[str, Any], ttl: float | None = None) -> None:
    """storage.set each key to its value in the tenant, as a script would."""
    api = HostApi(tenant_id(app, tenant))
    calls = [
        {"id": n, "op": "storage.set", "arg": {"key": k, "value": json.dumps(v), "ttl": ttl}}
        for n, (k, v) in enumerate(items.items())
    ]
    with app.app_context():
        answers = api(calls)
    assert all(answer["ok"] for answer in answers), answers


def expire(app: Flask, tenant: str, key: str) -> None:
    """Move a key's expiry into the past, as time would."""
    with app.app_context():
        item = db.session.get(StorageItem, (tenant_id(app, tenant), key))
        item.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
