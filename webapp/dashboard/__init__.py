"""The dashboard page (`/`): views, the numbers behind it, and its server-drawn charts."""

from webapp.dashboard.views import bp

__all__ = ["bp"]
