"""The storage browser: editors list the tenant's live keys (by prefix, paged), read one key's
value and delete it. A key may hold any character, so it travels in the query string
(`?key=`), never in the path. Every query starts from `scoped`: another tenant's key is never
found, whatever name is guessed."""

import json
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import Select
from sqlalchemy.orm import defer

from webapp import htmx
from webapp.extensions import db
from webapp.models import StorageItem
from webapp.permissions import require
from webapp.scripts.queries import BadPaging, paginate, paging_args
from webapp.storage.service import delete_item, key_starts_with, not_expired
from webapp.tenancy import current_tenant, scoped

bp = Blueprint("storage", __name__)
PER_PAGE = 20


def _live_items() -> Select:
    return scoped(StorageItem).where(not_expired())


def _item_or_404() -> StorageItem:
    """The live item named by `?key=`: 404 when missing, expired or another tenant's."""
    key = request.args.get("key", "")
    item = db.session.scalar(_live_items().where(StorageItem.key == key)) if key else None
    if item is None:
        abort(404)
    return item


def _parsed(text: str) -> tuple[Any, bool]:
    """The stored JSON as a value, or the text itself when it does not parse."""
    try:
        return json.loads(text), True
    except (ValueError, RecursionError):
        return text, False


@bp.get("/storage")
@require("storage:manage")
def index():
    prefix = request.args.get("prefix", "")
    try:
        page, _ = paging_args(request.args)
    except BadPaging:
        page = 1
    stmt = _live_items().options(defer(StorageItem.value)).order_by(StorageItem.key)
    if prefix:
        stmt = stmt.where(key_starts_with(prefix))
    result = paginate(stmt, page, PER_PAGE)
    template = "storage/_table.html" if htmx.target() == "storage-table" else "storage/index.html"
    return render_template(template, page=result, prefix=prefix)


@bp.get("/storage/item")
@require("storage:manage")
def item():
    found = _item_or_404()
    value, is_json = _parsed(found.value)
    return render_template("storage/item.html", item=found, value=value, is_json=is_json)


@bp.post("/storage/delete")
@require("storage:manage")
def delete():
    key = _item_or_404().key
    if delete_item(current_tenant().id, key) is None:  # deleted by a script in between
        abort(404)
    db.session.commit()
    flash(f"Key “{key}” deleted.")
    return redirect(url_for("storage.index"), 303)
