"""The audit log over REST, for admins: read only (docs/audit.md)."""

from flask import request

from webapp.api.blueprint import bp
from webapp.api.helpers import page_of
from webapp.audit.queries import FilterInvalid, entries_stmt, parse_filters
from webapp.errors import ApiError
from webapp.permissions import require
from webapp.serializers import audit_json


@bp.get("/audit")
@require("audit:read")
def list_audit():
    try:
        filters = parse_filters(request.args)
    except FilterInvalid as exc:
        raise ApiError(422, "invalid filter", exc.fields) from None
    return page_of(entries_stmt(filters), audit_json)
