"""Input no database should see: NUL characters are refused at the door (PostgreSQL rejects
them in text, SQLite would store them silently)."""

from flask import Flask, abort, request


def init_app(app: Flask) -> None:
    @app.before_request
    def _refuse_nul() -> None:
        for source in (request.args, request.form):
            for key, value in source.items(multi=True):
                if "\x00" in key or "\x00" in value:
                    abort(400, f"NUL characters are not allowed (in {key.replace(chr(0), '')!r})")
        if request.path.startswith("/api/scripts/"):
            return  # endpoint bodies belong to the script; it gets them as they came
        if request.content_length and (b"\\u0000" in request.get_data() or b"\x00" in request.get_data()):
            abort(400, "NUL characters are not allowed in the request body")
