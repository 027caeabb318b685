"""Security headers on every response: only our own static files may run or be framed."""

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)


def init_app(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # One URL answers a full page or an htmx fragment: caches (and the Back button) must
        # never hand out one for the other.
        response.vary.add("HX-Request")
        if request.headers.get("HX-Request"):
            response.headers["Cache-Control"] = "no-store"
        return response

    app.session_interface = _SessionInterface()


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie is marked Secure whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure
