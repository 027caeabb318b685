"""The /audit page (filters, paging, htmx like the executions list) and its CSV export, for
admins. Read only: no route here, or anywhere, changes an entry."""

from flask import Blueprint, Response, render_template, request, stream_with_context

from webapp import htmx
from webapp.audit.log import ACTIONS
from webapp.audit.queries import FAMILIES, FilterInvalid, Filters, csv_chunks, entries_stmt, parse_filters
from webapp.permissions import require
from webapp.scripts.queries import BadPaging, paginate, paging_args

bp = Blueprint("audit", __name__)
PER_PAGE = 50


@bp.get("/audit")
@require("audit:read")
def index():
    try:
        filters, errors = parse_filters(request.args), {}
    except FilterInvalid as exc:
        filters, errors = Filters(), exc.fields
    try:
        page, _ = paging_args(request.args)
    except BadPaging:
        page = 1
    result = paginate(entries_stmt(filters), page, PER_PAGE)
    given = {k: str(request.args.get(k, "")) for k in ("actor", "action", "target", "since", "until", "entry")}
    context = {"page": result, "filters": filters.args(), "given": given, "errors": errors}
    status = 422 if errors else 200
    if htmx.target() == "audit-table":
        return render_template("audit/_table.html", **context), status
    return render_template("audit/index.html", actions=ACTIONS, families=FAMILIES, **context), status


@bp.get("/audit.csv")
@require("audit:read")
def export():
    """Streamed: rows are read and sent a batch at a time (webapp/audit/queries.py)."""
    try:
        stmt = entries_stmt(parse_filters(request.args))
    except FilterInvalid as exc:
        return Response(f"{exc}\n", status=422, mimetype="text/plain")
    headers = {"Content-Disposition": 'attachment; filename="audit.csv"', "Cache-Control": "no-store"}
    return Response(stream_with_context(csv_chunks(stmt)), mimetype="text/csv", headers=headers)
