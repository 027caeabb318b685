"""GET /api/v1/openapi.json: the REST API's description, maintained by hand in openapi.json.

Public: it describes the API and holds no tenant data. tests/security/test_openapi.py checks
that it names every /api/v1 rule of the URL map (and no other), and runs schemathesis against
a live server to check that the API answers as it says.
"""

import json
from pathlib import Path

from flask import Response

from webapp.api.blueprint import bp

DOCUMENT = Path(__file__).with_name("openapi.json")
_TEXT = json.dumps(json.loads(DOCUMENT.read_text()), separators=(",", ":"))  # fails at import if malformed


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(_TEXT, mimetype="application/json")
