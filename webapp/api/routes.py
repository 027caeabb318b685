"""The API blueprint with every route on it: each module imported here adds its own to `bp`."""

from webapp.api import audit, cron, openapi, scripts, secrets, settings, usage  # noqa: F401
from webapp.api.blueprint import bp

__all__ = ["bp"]
