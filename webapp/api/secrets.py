"""Secrets over REST: list (names, never values), set or replace, delete (docs/secrets.md)."""

from webapp.api.blueprint import bp
from webapp.api.helpers import json_body, page_of
from webapp.auth.identity import current_principal
from webapp.errors import ApiError
from webapp.models import Secret
from webapp.permissions import can, require
from webapp.secret_store import service
from webapp.serializers import secret_json
from webapp.tenancy import current_tenant, scoped


@bp.get("/secrets")
@require("secrets:read")
def list_secrets():
    names_only = not can("secrets:write")
    return page_of(scoped(Secret).order_by(Secret.name), lambda s: secret_json(s, names_only))


@bp.put("/secrets/<name>")
@require("secrets:write")
def put_secret(name: str):
    body = json_body()
    try:
        created = service.put(current_tenant().id, name, body.get("value"), current_principal().user.id)
    except service.SecretInvalid as exc:
        raise ApiError(422, "invalid fields", exc.fields) from None  # never the value
    return secret_json(service.find(current_tenant().id, name)), 201 if created else 200


@bp.delete("/secrets/<name>")
@require("secrets:write")
def delete_secret(name: str):
    if not service.remove(current_tenant().id, name):
        raise ApiError(404, "no secret by that name in this tenant")
    return "", 204
