"""The tenant's settings over REST, for admins: read and change (docs/api.md#settings)."""

from webapp import tenant_settings
from webapp.api.blueprint import bp
from webapp.api.helpers import json_body
from webapp.errors import ApiError
from webapp.permissions import require
from webapp.tenancy import current_tenant


@bp.get("/settings")
@require("settings:manage")
def get_settings():
    return tenant_settings.settings_json(current_tenant())


@bp.patch("/settings")
@require("settings:manage")
def update_settings():
    body = json_body()
    unknown = sorted(set(body) - set(tenant_settings.FIELDS))
    if unknown:
        raise ApiError(422, "invalid fields", {key: "unknown field" for key in unknown})
    if "fetch_allowed_hosts" in body:
        try:
            hosts = tenant_settings.hosts_from_json(body["fetch_allowed_hosts"])
        except tenant_settings.SettingsInvalid as exc:
            raise ApiError(422, "invalid fields", exc.fields) from None
        tenant_settings.update(current_tenant().id, hosts)
    return tenant_settings.settings_json(current_tenant())
