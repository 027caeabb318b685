"""Tenant scoping: the one place queries are limited to the caller's tenant."""

import uuid
from typing import TypeVar

from flask import abort
from sqlalchemy import Select, select

from webapp.auth.identity import current_principal
from webapp.extensions import db
from webapp.models import Tenant

M = TypeVar("M")


def current_tenant() -> Tenant:
    principal = current_principal()
    if principal is None:
        abort(401)
    return principal.tenant


def scoped(model: type[M]) -> Select:
    """SELECT of `model` limited to the current tenant."""
    return select(model).where(model.tenant_id == current_tenant().id)  # type: ignore[attr-defined]


def get_or_404(model: type[M], object_id: object) -> M:
    """The tenant's object with this id; 404 whether it is missing or another tenant's."""
    key = object_id
    if isinstance(object_id, str) and _has_uuid_key(model):
        try:
            key = uuid.UUID(object_id)
        except ValueError:
            abort(404)
    obj = db.session.scalar(scoped(model).where(model.id == key))  # type: ignore[attr-defined]
    if obj is None:
        abort(404)
    return obj


def _has_uuid_key(model: type) -> bool:
    return isinstance(model.__table__.c.id.type, db.Uuid)  # type: ignore[attr-defined]
