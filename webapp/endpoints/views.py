"""The wildcard blueprint: every /api/scripts/<path> call, every method (docs/endpoints.md).

Caller (session with its current tenant, not from another site; or API token) → permission →
route → request event → run on the `endpoints` queue and wait, bounded (webapp/endpoints/calls.py)
→ the script's {status, headers, body}.
"""

from typing import Any

from flask import Blueprint, current_app, request
from redis.exceptions import RedisError
from werkzeug.exceptions import RequestEntityTooLarge

from webapp.auth.identity import bearer_token, current_caller
from webapp.auth.roles import role_allows
from webapp.auth.tokens import AUTH_VERSION_KEY
from webapp.endpoints import calls
from webapp.endpoints.http import STATUS_FOR_ERROR, build_response, error, request_event
from webapp.endpoints.router import VERSION_KEY, get_router
from webapp.executions.service import QueueUnavailable
from webapp.extensions import csrf
from webapp.redis_client import get_redis

bp = Blueprint("endpoints", __name__)
csrf.exempt(bp)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@bp.route("/api/scripts", defaults={"path": ""}, methods=METHODS)
@bp.route("/api/scripts/<path:path>", methods=METHODS)
def serve(path: str):
    routes_version, auth_version = _versions()
    caller = current_caller(auth_version)
    if caller is None:
        return error(
            401, "unauthorized", "log in or send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"}
        )
    if _cross_site_session():
        return error(403, "cross_site", "a call from another site cannot use your session: send a Bearer token")
    if not role_allows(caller.role, "endpoints:call"):
        return error(403, "forbidden", "your role may not call endpoints")
    script_path = "/" + path
    method = "GET" if request.method == "HEAD" else request.method  # HEAD: GET without the body
    router = get_router()
    router.refresh_if_changed(routes_version)
    match = router.resolve(caller.tenant.id, method, script_path)
    if match.route is None:
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
    script = match.route.script
    try:
        call = calls.start_call(script, event, caller)
    except calls.TenantBusy as exc:
        return error(429, "too_many_requests", str(exc), None, **{"Retry-After": str(exc.refusal.retry_after)})
    except QueueUnavailable as exc:
        return error(503, "unavailable", str(exc), None, **{"Retry-After": "5"})
    return _respond(calls.wait_for_answer(call, script))


def _cross_site_session() -> bool:
    """A call authenticated by the session cookie that the browser says another site made:
    a page elsewhere must not run a user's endpoints with their session (a GET has side
    effects too, and SameSite=Lax sends the cookie on top-level GETs). Browsers set
    Sec-Fetch-Site themselves and pages cannot forge it; a token is never sent by a browser on
    its own, so token calls are not concerned (docs/endpoints.md)."""
    return bearer_token() is None and request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site"


def _versions() -> tuple[bytes | None, bytes | None]:
    """The route table's and the caller cache's versions, in one round trip; (None, None) when
    Redis cannot say (then the database decides)."""
    try:
        routes, auth = get_redis().mget([VERSION_KEY, AUTH_VERSION_KEY])
    except RedisError:
        return None, None
    return routes or b"", auth or b""


def _respond(answer: dict[str, Any]):
    if answer.get("status") == "succeeded":
        return build_response(answer.get("result"))
    kind = answer.get("error_kind") or "exception"
    status = answer.get("http") or STATUS_FOR_ERROR.get(kind, 500)
    code = {502: "bad_response", 504: "timeout", 503: "unavailable"}.get(status, "script_error")
    headers = {"Retry-After": "5"} if status == 503 else {}
    return error(status, code, answer.get("error_message") or kind, answer["id"], **headers)
