"""A script's fields, each declared once with what the rest of the code needs to know of it.

From SCRIPT_FIELDS come the fields a user may set (validation), how the edit form reads them
(forms.py), what a new version keeps (service.py, the versions pages), the JSON of a script and
of a version (serializers.py), and their OpenAPI schemas (webapp/api/openapi.py). The names are
the API's: see docs/api.md. Pure data, importing nothing of the app, so that any module can use it.
"""

from dataclasses import dataclass
from typing import Literal

SCRIPT_TYPES = ("manual", "cron", "endpoint")
SCRIPT_STATUSES = ("active", "disabled")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MISFIRE_POLICIES = ("run_once", "skip")

# How the edit form sends a field: "textarea" text arrives with CRLF line ends; "limits" is
# an object read from one `limits_<key>` input per limit.
FormInput = Literal["text", "textarea", "select", "limits"]


@dataclass(frozen=True)
class ScriptField:
    name: str
    json_type: Literal["string", "integer", "object"] = "string"
    format: str | None = None  # "uuid" or "date-time": written as text in JSON
    shows: str | None = None  # a related row, shown in JSON by this attribute of it
    enum: tuple[str, ...] | None = None
    nullable: bool = False  # null in JSON when it does not apply
    editable: bool = False  # the user sets it: the form, POST and PATCH
    versioned: bool = False  # a change makes a new version, which keeps its own copy
    per_version: bool = False  # not versioned, but each version has its own (its number, when, by whom)
    form: FormInput | None = None
    required: bool = False  # when creating
    accepts_null: bool = False  # a request may send null for it, taken as empty
    max_length: int | None = None
    minimum: int | None = None
    default: str | None = None  # what an omitted field becomes
    description: str | None = None  # of what to send (editable fields) or of what is shown


SCRIPT_FIELDS = (
    ScriptField("id", format="uuid"),
    ScriptField("tenant", shows="name"),
    ScriptField("name", editable=True, form="text", required=True, max_length=100, description="Unique in the tenant."),
    ScriptField("description", editable=True, form="text", accepts_null=True, max_length=2000),
    ScriptField("type", enum=SCRIPT_TYPES, editable=True, versioned=True, form="select", required=True),
    ScriptField(
        "source",
        editable=True,
        versioned=True,
        form="textarea",
        required=True,
        max_length=256 * 1024,
        description="JavaScript defining a function main(event); at most 262,144 characters.",
    ),
    ScriptField("status", enum=SCRIPT_STATUSES, editable=True, form="select", default="active"),
    ScriptField("cron_expression", nullable=True, editable=True, versioned=True, form="text", max_length=200),
    ScriptField(
        "timezone",
        editable=True,
        versioned=True,
        form="text",
        max_length=64,
        default="UTC",
        description="IANA time zone name",
    ),
    ScriptField("endpoint_path", nullable=True, editable=True, versioned=True, form="text", max_length=500),
    ScriptField("endpoint_method", enum=HTTP_METHODS, nullable=True, editable=True, versioned=True, form="select"),
    ScriptField(
        "misfire_policy",
        enum=MISFIRE_POLICIES,
        nullable=True,
        editable=True,
        versioned=True,
        form="select",
        default="run_once",
        description="Cron scripts only: what a scheduler that was down does about the fires it missed.",
    ),
    ScriptField(
        "limits",
        json_type="object",
        nullable=True,
        editable=True,
        versioned=True,
        form="limits",
        description="Per-script limits: each optional, positive, and no higher than the platform default (else 422).",
    ),
    ScriptField("version", json_type="integer", minimum=1, per_version=True),
    ScriptField("created_at", format="date-time", per_version=True),
    ScriptField("updated_at", format="date-time"),
    ScriptField("created_by", shows="email", nullable=True, per_version=True, description="email"),
    ScriptField("updated_by", shows="email", nullable=True, description="email"),
)
FIELDS = {field.name: field for field in SCRIPT_FIELDS}
EDITABLE_FIELDS = tuple(field.name for field in SCRIPT_FIELDS if field.editable)
VERSIONED_FIELDS = tuple(field.name for field in SCRIPT_FIELDS if field.versioned)
# A version's JSON: its settings, and its number, time and author.
VERSION_JSON_FIELDS = tuple(field.name for field in SCRIPT_FIELDS if field.versioned or field.per_version)
