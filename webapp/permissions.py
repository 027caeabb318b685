"""Roles and what each may do: the one place permissions are decided."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort

ROLE_RANK = {"viewer": 0, "editor": 1, "admin": 2}

_VIEWER = frozenset({"scripts:read", "executions:read", "endpoints:call"})
_EDITOR = _VIEWER | {"scripts:write", "scripts:run"}
_ADMIN = _EDITOR | {"members:manage", "tokens:manage", "usage:read"}
PERMISSIONS: dict[str, frozenset[str]] = {"viewer": _VIEWER, "editor": _EDITOR, "admin": _ADMIN}


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def role_allows(role: str, permission: str) -> bool:
    if permission not in _ADMIN:
        raise ValueError(f"unknown permission {permission!r}")
    return permission in PERMISSIONS.get(role, frozenset())


def can(permission: str) -> bool:
    """Whether the current caller holds the permission in its current tenant."""
    from webapp.auth.identity import current_principal

    principal = current_principal()
    return principal is not None and role_allows(principal.role, permission)


def require(permission: str) -> Callable:
    """View decorator: 401 without a caller, 403 when the caller's role lacks the permission."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            from webapp.auth.identity import current_principal

            principal = current_principal()
            if principal is None:
                abort(401)
            if not role_allows(principal.role, permission):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_permission = permission  # type: ignore[attr-defined]
        return wrapped

    return decorator
