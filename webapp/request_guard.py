"""Input no database should see: NUL characters are refused at the door (PostgreSQL rejects
them in text, SQLite would store them silently)."""

from flask import Flask, abort, request


def init_app(app: Flask) -> None:
    @app.before_request
    def _refuse_nul() -> None:
        # The query string is looked at raw first: parsing it on every request costs.
        query = request.query_string
        suspect_query = b"\x00" in query or b"%00" in query
        sources = ([request.args] if suspect_query else []) + ([request.form] if _is_form() else [])
        for source in sources:
            for key, value in source.items(multi=True):
                if "\x00" in key or "\x00" in value:
                    abort(400, f"NUL characters are not allowed (in {key.replace(chr(0), '')!r})")
        if request.path.startswith("/api/scripts/"):
            return  # endpoint bodies belong to the script; it gets them as they came
        if request.content_length and (b"\\u0000" in request.get_data() or b"\x00" in request.get_data()):
            abort(400, "NUL characters are not allowed in the request body")


def _is_form() -> bool:
    """A body that Flask parses into request.form (other bodies leave it empty)."""
    return request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")
