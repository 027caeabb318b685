"""Permission checks on the current caller: the one place views ask what a caller may do.
What each role may do is data, in webapp/auth/roles.py."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort

from webapp.auth.identity import current_principal
from webapp.auth.roles import role_allows


def can(permission: str) -> bool:
    """Whether the current caller holds the permission in its current tenant."""
    principal = current_principal()
    return principal is not None and role_allows(principal.role, permission)


def require(permission: str) -> Callable:
    """View decorator: 401 without a caller, 403 when the caller's role lacks the permission."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal is None:
                abort(401)
            if not role_allows(principal.role, permission):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_permission = permission  # type: ignore[attr-defined]
        return wrapped

    return decorator
