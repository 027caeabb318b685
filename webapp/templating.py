"""Template globals and filters."""

import hashlib
from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from webapp.auth.identity import current_principal, user_memberships
from webapp.permissions import can
from webapp.quotas import filesize


def timestamp(value: datetime | None) -> Markup:
    """A <time> in UTC that static/js/app.js rewrites into the viewer's timezone (UTC on hover)."""
    if value is None:
        return Markup("—")
    utc = value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup(f'<time datetime="{escape(value.isoformat())}" title="{escape(utc)}">{escape(utc)}</time>')


def digest(text: str) -> str:
    """A short fingerprint of rendered text: a live part (templates/_live.html) that comes back
    with the same one is left as it is."""
    return hashlib.blake2b(str(text).encode(), digest_size=8).hexdigest()


def init_app(app: Flask) -> None:
    app.jinja_env.filters["timestamp"] = timestamp
    app.jinja_env.filters["digest"] = digest
    app.jinja_env.filters["filesize"] = filesize
    app.jinja_env.globals.update(can=can, current_principal=current_principal, user_memberships=user_memberships)
