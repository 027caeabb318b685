"""The htmx side of a request: whether htmx made it, which element it replaces, and the
answer that sends the whole page elsewhere. Every view reads the HX-* headers through here."""

from urllib.parse import urlsplit

from flask import request


def is_htmx() -> bool:
    """Whether htmx made this request: a fragment is wanted, not a page."""
    return request.headers.get("HX-Request") == "true"


def target() -> str | None:
    """The id of the element an htmx request will swap, or None for any other request."""
    return request.headers.get("HX-Target") if is_htmx() else None


def redirect(location: str) -> tuple[str, int, dict[str, str]]:
    """For an htmx request: load `location` as a whole page (a 3xx would be swapped in place)."""
    return "", 200, {"HX-Redirect": location}


def page_path() -> str:
    """The path (and query) of the page the user is on: for an htmx request the page that made
    it (HX-Current-URL), not the fragment's URL, so that a login can lead back to that page."""
    if is_htmx():
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        if current.path.startswith("/"):
            return current.path + (f"?{current.query}" if current.query else "")
    return request.full_path.rstrip("?")
