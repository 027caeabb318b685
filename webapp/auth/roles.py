"""The roles a member holds in a tenant, their order, and what each may do: plain data."""

ROLES = ("viewer", "editor", "admin")  # lowest first
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}

_VIEWER = frozenset({"scripts:read", "executions:read", "endpoints:call", "secrets:read"})  # names only
_EDITOR = _VIEWER | {"scripts:write", "scripts:run", "secrets:write"}
_ADMIN = _EDITOR | {"members:manage", "tokens:manage", "usage:read"}
PERMISSIONS: dict[str, frozenset[str]] = {"viewer": _VIEWER, "editor": _EDITOR, "admin": _ADMIN}


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def role_allows(role: str, permission: str) -> bool:
    if permission not in _ADMIN:
        raise ValueError(f"unknown permission {permission!r}")
    return permission in PERMISSIONS.get(role, frozenset())
