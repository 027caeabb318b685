"""Duplicate: the new-script form's values copied from a script, with a name and an endpoint
route that no script of the tenant has yet. Nothing is saved until the form is sent."""

from typing import Any

from webapp.extensions import db
from webapp.models import Script
from webapp.scripts.fields import SCRIPT_FIELDS
from webapp.scripts.forms import initial_values
from webapp.scripts.validation import route_key
from webapp.tenancy import scoped

NAME_LENGTH = next(field.max_length for field in SCRIPT_FIELDS if field.name == "name") or 100
TRIES = 100  # copies of one script before the form is left to name the clash


def duplicate_values(script: Script) -> dict[str, Any]:
    values = initial_values(script)
    values["name"] = _free_name(script.name)
    if script.type == "endpoint" and script.endpoint_path:
        values["endpoint_path"] = _free_path(script.endpoint_path, script.endpoint_method or "GET")
    return values


def copy_name(name: str, n: int) -> str:
    """ "<name> (copy)", then "(copy 2)" …, the name cut short to keep within the field's length."""
    suffix = " (copy)" if n == 1 else f" (copy {n})"
    return name[: NAME_LENGTH - len(suffix)].rstrip() + suffix


def copy_path(path: str, n: int) -> str:
    """The path with "-copy" (then "-copy-2" …) after its last literal segment:
    /orders/{id}/refunds/{rid} -> /orders/{id}/refunds-copy/{rid}; /{id} -> /copy/{id}."""
    suffix = "-copy" if n == 1 else f"-copy-{n}"
    segments = path.strip("/").split("/") if path != "/" else []
    for i in range(len(segments) - 1, -1, -1):
        if not segments[i].startswith("{"):
            segments[i] += suffix
            return "/" + "/".join(segments)
    return "/" + "/".join([suffix[1:], *segments])


def _free_name(name: str) -> str:
    stem = name[: NAME_LENGTH // 2]  # every candidate starts with it, however much of the name is cut
    names = scoped(Script).with_only_columns(Script.name).where(Script.name.startswith(stem, autoescape=True))
    taken = set(db.session.scalars(names))
    return next((copy_name(name, n) for n in range(1, TRIES) if copy_name(name, n) not in taken), copy_name(name, 1))


def _free_path(path: str, method: str) -> str:
    routes = scoped(Script).with_only_columns(Script.endpoint_route).where(Script.endpoint_method == method)
    taken = set(db.session.scalars(routes))
    return next(
        (copy_path(path, n) for n in range(1, TRIES) if route_key(copy_path(path, n)) not in taken), copy_path(path, 1)
    )
