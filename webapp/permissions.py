"""Permission checks on the current caller: the one place views ask what a caller may do.
What each role may do is data, in webapp/auth/roles.py."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort
from werkzeug.exceptions import Forbidden

from webapp.auth.identity import current_principal
from webapp.auth.roles import ACTIONS, role_allows, roles_allowed


class NotPermitted(Forbidden):
    """A 403 that knows the permission the caller lacks (its description stays werkzeug's,
    which is what the API answers)."""

    def __init__(self, permission: str):
        super().__init__()
        self.permission = permission


def can(permission: str) -> bool:
    """Whether the current caller holds the permission in its current tenant."""
    principal = current_principal()
    return principal is not None and role_allows(principal.role, permission)


def ensure(permission: str) -> None:
    """Inside a view already behind `require`: 403 unless the caller also holds `permission`."""
    if not can(permission):
        raise NotPermitted(permission)


def require(permission: str) -> Callable:
    """View decorator: 401 without a caller, 403 when the caller's role lacks the permission."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal is None:
                abort(401)
            if not role_allows(principal.role, permission):
                raise NotPermitted(permission)
            return view(*args, **kwargs)

        wrapped.required_permission = permission  # type: ignore[attr-defined]
        return wrapped

    return decorator


def refusal(permission: str) -> str:
    """Who may do what the current caller may not, in words: "Only editors and admins of acme
    can run scripts; you are a viewer." """
    principal = current_principal()
    roles = [f"{role}s" for role in roles_allowed(permission)]
    allowed = " and ".join([", ".join(roles[:-1]), roles[-1]] if len(roles) > 1 else roles)
    where = f" of {principal.tenant.name}" if principal else ""
    you = f"; you are {_article(principal.role)} {principal.role}" if principal else ""
    return f"Only {allowed}{where} can {ACTIONS[permission]}{you}."


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
