"""GET /api/v1/openapi.json: the REST API's description.

Written by hand in openapi.json, but for the schemas of a script, a version and the bodies that
create and change a script: those are built from the fields of webapp/scripts/fields.py and
added when this module is imported. Public: it describes the API and holds no tenant data.
tests/security/test_openapi.py checks that it names every /api/v1 rule of the URL map (and no
other), and runs schemathesis against a live server to check that the API answers as it says.
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flask import Response

from webapp.api.blueprint import bp
from webapp.limits import LIMIT_KEYS
from webapp.scripts.fields import EDITABLE_FIELDS, FIELDS, SCRIPT_FIELDS, VERSION_JSON_FIELDS, ScriptField

HAND_WRITTEN = Path(__file__).with_name("openapi.json")
Schema = dict[str, Any]
_LIMITS_REQUEST: Schema = {
    "additionalProperties": False,
    "properties": {key: {"type": "number", "exclusiveMinimum": 0} for key in LIMIT_KEYS},
}
_LIMITS_ANSWER: Schema = {"additionalProperties": {"type": "number"}}


def build_document() -> Schema:
    document = json.loads(HAND_WRITTEN.read_text())  # fails at import if malformed
    document["components"]["schemas"].update(script_schemas())
    return document


def script_schemas() -> dict[str, Schema]:
    editable = [FIELDS[name] for name in EDITABLE_FIELDS]
    return {
        "Script": _object(SCRIPT_FIELDS, request=False, required=[f.name for f in SCRIPT_FIELDS]),
        "Version": _object([FIELDS[name] for name in VERSION_JSON_FIELDS], request=False, required=VERSION_JSON_FIELDS),
        "ScriptCreate": _object(editable, request=True, required=[f.name for f in editable if f.required]),
        "ScriptUpdate": _object(editable, request=True, required=[]),
    }


def _object(fields: Iterable[ScriptField], request: bool, required: Iterable[str]) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False}
    if required := list(required):
        schema["required"] = required
    schema["properties"] = {field.name: _field(field, request) for field in fields}
    return schema


def _field(field: ScriptField, request: bool) -> Schema:
    """A request states what is accepted (lengths, defaults); an answer only the shape."""
    schema: Schema = {"type": field.json_type}
    if field.format:
        schema["format"] = field.format
    if field.enum:
        schema["enum"] = list(field.enum)
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.form == "limits":
        schema.update(_LIMITS_REQUEST if request else _LIMITS_ANSWER)
    if request and field.max_length:
        schema["maxLength"] = field.max_length
    if request and field.default is not None:
        schema["default"] = field.default
    if field.description and request == field.editable:
        schema["description"] = field.description
    if field.nullable or (request and field.accepts_null):
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


_TEXT = json.dumps(build_document(), separators=(",", ":"))


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(_TEXT, mimetype="application/json")
