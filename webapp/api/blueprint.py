"""The API blueprint and who may use it: a caller, and a session's writes prove their page."""

from flask import Blueprint, abort, request

from webapp.auth.identity import bearer_token, current_principal
from webapp.extensions import csrf

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


PUBLIC_ENDPOINTS = frozenset({"api.openapi"})


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    if current_principal() is None:
        abort(401)
    if request.method not in _SAFE_METHODS and bearer_token() is None:
        csrf.protect()  # a browser session must prove the request came from our page
