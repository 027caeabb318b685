"""Small helpers shared by the API views."""

import json
from typing import Any

from flask import request

from webapp.errors import ApiError
from webapp.scripts.queries import BadPaging, Page, paginate, paging_args


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> dict[str, Any]:
    try:
        data = json.loads(request.get_data(), parse_constant=_no_constants) if request.data else None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed JSON: the body must be a JSON object")
    return data


MAX_VERSION = 2**31 - 1  # the database's integer: a larger number names no version


def page_of(stmt: Any, render: Any) -> dict[str, Any]:
    try:
        page, per_page = paging_args(request.args)
    except BadPaging as exc:
        raise ApiError(422, "invalid paging", {exc.field: str(exc)}) from exc
    result: Page = paginate(stmt, page, per_page)
    return {
        "items": [render(item) for item in result.items],
        "page": result.page,
        "per_page": result.per_page,
        "total": result.total,
    }
