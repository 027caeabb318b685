"""The one mapping between HTTP and scripts: a request becomes the event, a script's return
value becomes the response (docs/endpoints.md). The worker uses `response_problem` to fail a run with
`bad_response`; the web process uses `build_response` (or `error`) to answer the caller."""

import json
import re
from typing import Any

from flask import Request, Response, jsonify

from webapp.client_address import client_address

# Headers a script never sees: the caller's credentials for this platform.
PRIVATE_REQUEST_HEADERS = frozenset({"authorization", "cookie", "x-csrftoken"})
# Headers a script may not set.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # fullmatch: "$" would let a trailing newline in
# How a failed endpoint run answers the caller (docs/endpoints.md, "Errors").
STATUS_FOR_ERROR = {"bad_response": 502, "timeout": 504, "lost": 503}  # anything else: 500


def request_event(request: Request, path: str, params: dict[str, str]) -> dict[str, Any]:
    body = request.get_data(cache=True).decode("utf-8", errors="replace")
    parsed = None
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
    query: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        query[key] = values[0] if len(values) == 1 else values
    return {
        "method": request.method,
        "path": path,
        "params": params,
        "query": query,
        "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() not in PRIVATE_REQUEST_HEADERS},
        "body": body,
        "json": parsed,
        "ip": client_address(request),
    }


# A call's record keeps a summary, never bodies, headers or query values (docs/endpoints.md).
SUMMARY_QUERY_NAMES = 20
SUMMARY_TEXT_CHARS = 100


def request_summary(event: dict[str, Any]) -> dict[str, Any]:
    """What a call's record keeps of its request: the query's parameter names only, since
    values may be credentials."""
    content_type = event["headers"].get("content-type")
    return {
        "method": event["method"],
        "path": event["path"],
        "query": [name[:SUMMARY_TEXT_CHARS] for name in list(event["query"])[:SUMMARY_QUERY_NAMES]],
        "request_bytes": len(event["body"].encode()),
        "request_type": content_type[:SUMMARY_TEXT_CHARS] if content_type else None,
    }


def response_summary(result: Any) -> dict[str, Any]:
    """What a call's record keeps of the response a successful run makes."""
    response = build_response(result)
    content_type = response.headers.get("Content-Type")
    return {
        "response_bytes": len(response.get_data()),
        "response_type": content_type[:SUMMARY_TEXT_CHARS] if content_type else None,
    }


def response_problem(result: Any) -> str | None:
    """Why a value returned by an endpoint script cannot become a response, or None."""
    if result is None:
        return None  # no value: an empty 200
    if not isinstance(result, dict):
        return f"an endpoint script must return an object like {{status, headers, body}}, got {_kind(result)}"
    unknown = sorted(set(result) - {"status", "headers", "body"})
    if unknown:
        return (
            f"unknown response field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (use status, headers, body)"
        )
    status = result.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        return f"status must be an integer from 200 to 599, got {json.dumps(status)}"
    headers = result.get("headers") or {}
    if not isinstance(headers, dict):
        return f"headers must be an object of strings, got {_kind(headers)}"
    for name, value in headers.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return f"header {name!r} must be a string, got {_kind(value)}"
        if not _TOKEN.fullmatch(name):
            return f"header name {name!r} is not a valid HTTP header name"
        if not all(c == "\t" or 0x20 <= ord(c) <= 0x7E or 0xA0 <= ord(c) <= 0xFF for c in str(value)):
            return f"header {name!r} has characters HTTP does not allow (control or non-Latin-1 characters)"
    return None


def body_bytes(result: Any) -> bytes:
    body = (result or {}).get("body")
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


# Script output is served on the platform's own origin: it must never run code there.
ENDPOINT_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"


def build_response(result: Any) -> Response:
    """The HTTP response for a return value that passed `response_problem`."""
    result = result or {}
    body = result.get("body")
    response = Response(body_bytes(result), status=result.get("status", 200))
    if body is None:
        response.headers.pop("Content-Type", None)
    else:
        response.mimetype = "text/plain" if isinstance(body, str) else "application/json"
    for name, value in (result.get("headers") or {}).items():
        if _allowed_header(name):
            response.headers[name] = str(value)
    response.headers["Content-Security-Policy"] = ENDPOINT_CSP  # replaces any the script set
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def error(status: int, code: str, message: str, execution_id: Any = None, **headers: str) -> Response:
    """An endpoint call's failure, in the shape docs/endpoints.md gives."""
    response = jsonify(
        {"error": {"code": code, "message": message, "execution_id": str(execution_id) if execution_id else None}}
    )
    response.status_code = status
    response.headers.update(headers)
    return response


def _allowed_header(name: str) -> bool:
    lower = name.lower()
    if lower in HOP_BY_HOP:
        return False
    if lower in ("content-security-policy", "x-content-type-options"):
        return False  # set by the platform
    # Cookies: every tenant's endpoints share /api/scripts/* on the platform's origin, and
    # scripts never see the Cookie header. A script's cookie could only weigh on other
    # tenants' calls (or push the session out of the browser's jar): none is set.
    return lower != "set-cookie"


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
