"""The roles a member holds in a tenant, their order, and what each may do: plain data."""

ROLES = ("viewer", "editor", "admin")  # lowest first
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}

_VIEWER = frozenset({"scripts:read", "executions:read", "endpoints:call", "secrets:read"})  # secrets: names only
_EDITOR = _VIEWER | {"scripts:write", "scripts:run", "storage:manage", "secrets:write"}
_ADMIN = _EDITOR | {"members:manage", "tokens:manage", "usage:read", "audit:read", "settings:manage"}
PERMISSIONS: dict[str, frozenset[str]] = {"viewer": _VIEWER, "editor": _EDITOR, "admin": _ADMIN}
# What each permission lets a member do, as the 403 page says it ("… can run scripts").
ACTIONS = {
    "scripts:read": "see scripts",
    "executions:read": "see executions",
    "endpoints:call": "call endpoints",
    "scripts:write": "create, edit, enable, disable or delete scripts",
    "scripts:run": "run scripts",
    "members:manage": "manage members",
    "tokens:manage": "manage API tokens",
    "usage:read": "see the tenant's usage",
    "storage:manage": "browse and delete storage keys",
    "secrets:read": "see the names of secrets",
    "secrets:write": "set and delete secrets",
    "audit:read": "see the audit log",
    "settings:manage": "change the tenant's settings",
}


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def roles_allowed(permission: str) -> tuple[str, ...]:
    """The roles that hold the permission, lowest first."""
    return tuple(role for role in ROLES if permission in PERMISSIONS[role])


def role_allows(role: str, permission: str) -> bool:
    if permission not in _ADMIN:
        raise ValueError(f"unknown permission {permission!r}")
    return permission in PERMISSIONS.get(role, frozenset())
