"""The wildcard blueprint: every /api/scripts/<path> call, every method (SPEC §7).

Caller (session with its current tenant, or API token) → permission → route → request event →
run on the `endpoints` queue and wait (bounded) → the script's {status, headers, body}.
"""

import math
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import bindparam, select
from werkzeug.exceptions import RequestEntityTooLarge

from webapp.auth.identity import bearer_token, current_principal
from webapp.endpoints import calls
from webapp.endpoints.http import STATUS_FOR_ERROR, build_response, request_event
from webapp.endpoints.router import Route, get_router
from webapp.executions.service import QueueUnavailable
from webapp.extensions import csrf, db
from webapp.models import Script
from webapp.permissions import role_allows
from webapp.redis_client import get_redis

bp = Blueprint("endpoints", __name__)
csrf.exempt(bp)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def error(status: int, code: str, message: str, execution_id: Any = None, **headers: str):
    response = jsonify(
        {"error": {"code": code, "message": message, "execution_id": str(execution_id) if execution_id else None}}
    )
    response.status_code = status
    response.headers.update(headers)
    return response


@bp.route("/api/scripts", defaults={"path": ""}, methods=METHODS)
@bp.route("/api/scripts/<path:path>", methods=METHODS)
def serve(path: str):
    principal = current_principal()
    if principal is None:
        return error(
            401, "unauthorized", "log in or send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"}
        )
    if not role_allows(principal.role, "endpoints:call"):
        return error(403, "forbidden", "your role may not call endpoints")
    script_path = "/" + path
    method = "GET" if request.method == "HEAD" else request.method  # HEAD: GET without the body
    router = get_router()
    router.refresh_if_changed(get_redis())
    match = router.resolve(principal.tenant.id, method, script_path)
    script = _serving_script(match.route.script_id) if match.route else None
    if match.route is not None and not _still_serves(script, match.route):
        router.load_endpoints()  # the table was stale: look again before answering
        match = router.resolve(principal.tenant.id, method, script_path)
        script = _serving_script(match.route.script_id) if match.route else None
    if match.route is None or script is None or script.tenant_id != principal.tenant.id:
        if match.allowed:
            return error(
                405,
                "method_not_allowed",
                f"{script_path} answers {', '.join(match.allowed)}",
                Allow=", ".join(match.allowed),
            )
        return error(404, "not_found", f"no endpoint script serves {request.method} {script_path}")
    if request.method not in _SAFE and bearer_token() is None:
        csrf.protect()  # a browser session must prove the call came from our page
    limit = current_app.config["SETTINGS"].limits.body_kb * 1024
    if (request.content_length or 0) > limit:
        return error(413, "payload_too_large", f"the request body is over the {limit // 1024} KiB limit")
    try:
        event = request_event(request, script_path, match.params)
    except RequestEntityTooLarge:
        return error(413, "payload_too_large", "the request body is too large")
    if len(event["body"].encode()) > limit:
        return error(413, "payload_too_large", f"the request body is over the {limit // 1024} KiB limit")
    try:
        call = calls.start_call(script, event, principal.tenant, principal.user)
    except QueueUnavailable as exc:
        return error(503, "unavailable", str(exc), None, **{"Retry-After": "5"})
    return _respond(calls.wait_for_answer(call, _wall_seconds(script)))


def _respond(answer: dict[str, Any]):
    if answer.get("status") == "succeeded":
        return build_response(answer.get("result"))
    kind = answer.get("error_kind") or "exception"
    status = answer.get("http") or STATUS_FOR_ERROR.get(kind, 500)
    code = {502: "bad_response", 504: "timeout", 503: "unavailable"}.get(status, "script_error")
    headers = {"Retry-After": "5"} if status == 503 else {}
    return error(status, code, answer.get("error_message") or kind, answer["id"], **headers)


# The script's current routing fields and what a call needs: a row (cheaper than a model),
# from a statement built once (every call runs it).
_SERVING_SCRIPT = select(
    Script.id,
    Script.tenant_id,
    Script.name,
    Script.version,
    Script.status,
    Script.type,
    Script.endpoint_method,
    Script.endpoint_path,
    Script.limits,
).where(Script.id == bindparam("script_id"))


def _serving_script(script_id: Any) -> Any:
    return db.session.execute(_SERVING_SCRIPT, {"script_id": script_id}).one_or_none()


def _still_serves(script: Any, route: Route) -> bool:
    """The database still has this script active at this method and path."""
    return (
        script is not None
        and script.status == "active"
        and script.type == "endpoint"
        and script.endpoint_method == route.method
        and Route.of(script).segments == route.segments
    )


def _wall_seconds(script: Any) -> float:
    default = current_app.config["SETTINGS"].limits.wall_seconds
    own = (script.limits or {}).get("wall_seconds")
    return math.ceil(min(own or default, default))
