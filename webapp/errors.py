"""Error responses: JSON under /api/, HTML pages elsewhere."""

import contextlib
from typing import Any

from flask import Flask, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from webapp import htmx
from webapp.auth.identity import must_choose_tenant
from webapp.endpoints.http import error as endpoint_error
from webapp.extensions import db, login_manager
from webapp.permissions import NotPermitted, refusal

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_fields",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with a status, a code and optional per-field messages."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: dict[str, str] | None = None,
        code: str | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or {}
        self.code = code or _CODES.get(status, "error")
        self.extra = extra  # more members of the error object, e.g. `quota`


def wants_json() -> bool:
    return request.path.startswith("/api/")


def json_error(status: int, message: str, fields: dict[str, str] | None = None, code: str | None = None, **extra: Any):
    body: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message, "fields": fields or {}}
    body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


def _redirect(location: str):
    if htmx.is_htmx():  # a fragment request: send the whole page there
        return htmx.redirect(location)
    return redirect(location)


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return json_error(exc.status, exc.message, exc.fields, exc.code, **exc.extra)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError):
        message = f"CSRF check failed: {exc.description}"
        if wants_json():
            return json_error(400, message, code="csrf_failed")
        return render_template("error.html", status=400, message=message), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if wants_json():
            response = json_error(status, exc.description or "")
            if status == 405 and exc.get_response().headers.get("Allow"):
                response.headers["Allow"] = exc.get_response().headers["Allow"]
            return response
        if status == 401:
            if current_user.is_authenticated:
                if must_choose_tenant(current_user):
                    return _redirect(url_for("auth.choose_tenant", next=htmx.page_path()))
                return render_template("no_tenant.html"), 403  # a member of no tenant (any more)
            return _redirect(url_for("auth.login", next=htmx.page_path()))
        if isinstance(exc, NotPermitted):
            return render_template("error.html", status=403, message=refusal(exc.permission)), 403
        if status == 404:  # one page for "no such page" and "not in your tenant": error.html says it
            return render_template("error.html", status=404, message=None), 404
        return render_template("error.html", status=status, message=exc.description), status

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_unavailable(exc: Exception):
        """The database is down or restarting: say so (and when to retry), not "internal error"."""
        app.logger.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        with contextlib.suppress(Exception):  # the connection may be gone for good
            db.session.rollback()
        message = "the database is unavailable; try again in a few seconds"
        if request.path.startswith("/api/scripts"):  # an endpoint call: docs/endpoints.md's error shape
            return endpoint_error(503, "unavailable", message, None, **{"Retry-After": "5"})
        if wants_json():
            return json_error(503, message)
        g._login_user = login_manager.anonymous_user()  # templates would load the user: not now
        return render_template("unavailable.html", message=message), 503, {"Retry-After": "5"}

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        if wants_json():
            return json_error(500, "internal error")
        return render_template("error.html", status=500, message="Something went wrong on our side."), 500
