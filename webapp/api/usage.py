"""GET /api/v1/usage: the tenant's scripts and storage against its quotas (admins)."""

from webapp import quotas
from webapp.api.blueprint import bp
from webapp.permissions import require
from webapp.tenancy import current_tenant


@bp.get("/usage")
@require("usage:read")
def usage():
    return quotas.report(current_tenant().id).as_json()
