"""Security headers on every response: only our own static files may run or be framed."""

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

from webapp import htmx

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
_DEFAULTS = (
    ("Content-Security-Policy", _CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


def init_app(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        # Every response passes here (endpoint calls by the hundred a second): one look at the
        # names already set, where setdefault() would search the headers once per name.
        present = {name.lower() for name, _ in response.headers}
        for name, value in _DEFAULTS:
            if name.lower() not in present:
                response.headers.add(name, value)
        # One URL answers a full page or an htmx fragment: caches (and the Back button) must
        # never hand out one for the other.
        if "vary" in present:
            response.vary.add("HX-Request")
        else:
            response.headers.add("Vary", "HX-Request")
        if htmx.is_htmx():
            response.headers["Cache-Control"] = "no-store"
        return response

    app.session_interface = _SessionInterface()


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie is marked Secure whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure
