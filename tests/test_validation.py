"""Validation of a script's fields in-process: each bad value gets a message naming what is
wrong, for the form and the REST API alike (docs/api.md). No HTTP, no worker."""

import pytest

from webapp.extensions import db
from webapp.limits import DefaultLimits
from webapp.models import Tenant
from webapp.scripts.validation import ValidationFailed, path_problem, route_key, validate

SOURCE = "async function main(event) { return 1; }"
MANUAL = {"name": "report", "type": "manual", "source": SOURCE}
CRON = {**MANUAL, "type": "cron", "cron_expression": "*/5 * * * *"}
ENDPOINT = {**MANUAL, "type": "endpoint", "endpoint_path": "/orders/{id}", "endpoint_method": "post"}
DEFAULTS = DefaultLimits()


@pytest.fixture
def tenant_id(app) -> int:
    with app.app_context():
        tenant = Tenant(name="acme")
        db.session.add(tenant)
        db.session.commit()
        return tenant.id


@pytest.fixture
def check(app):
    """check(data, tenant_id) -> the cleaned values, or raises ValidationFailed."""

    def do(data: dict, tenant_id: int) -> dict:
        with app.app_context():
            return validate(data, tenant_id, DEFAULTS)

    return do


@pytest.fixture
def problems(check):
    def do(data: dict, tenant_id: int) -> dict[str, str]:
        with pytest.raises(ValidationFailed) as failed:
            check(data, tenant_id)
        return failed.value.fields

    return do


def test_a_valid_script_is_cleaned(tenant_id, check):
    out = check({**ENDPOINT, "name": "  spaced  ", "limits": {"cpu_seconds": 2}}, tenant_id)
    assert out["name"] == "spaced"
    assert out["endpoint_method"] == "POST"
    assert (out["status"], out["timezone"], out["cron_expression"]) == ("active", "UTC", None)
    assert out["limits"] == {"cpu_seconds": 2}
    assert check(CRON, tenant_id)["misfire_policy"] == "run_once"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({**MANUAL, "name": ""}, {"name": "is required"}),
        ({**MANUAL, "name": "x" * 101}, {"name": "must be at most 100 characters"}),
        ({**MANUAL, "name": 7}, {"name": "must be a string"}),
        ({**MANUAL, "colour": "red"}, {"colour": "unknown field"}),
        ({**MANUAL, "type": "daemon"}, {"type": "must be one of manual, cron, endpoint"}),
        ({**MANUAL, "type": None}, {"type": "is required"}),
        ({**MANUAL, "status": "paused"}, {"status": "must be one of active, disabled"}),
        ({**MANUAL, "source": "  "}, {"source": "is required: define a function main(event)"}),
        ({**MANUAL, "source": "function helper() {}"}, {"source": "must define a function main(event)"}),
        ({**MANUAL, "timezone": "Mars/Olympus"}, {"timezone": "unknown timezone 'Mars/Olympus'"}),
        ({**CRON, "cron_expression": ""}, {"cron_expression": "is required for a cron script"}),
        ({**CRON, "misfire_policy": "sometimes"}, {"misfire_policy": "must be one of run_once, skip"}),
        ({**ENDPOINT, "endpoint_path": ""}, {"endpoint_path": "is required for an endpoint script"}),
        ({**ENDPOINT, "endpoint_method": "BREW"}, {"endpoint_method": "must be one of GET, POST, PUT, PATCH, DELETE"}),
        ({**MANUAL, "limits": [1]}, {"limits": 'must be an object like {"cpu_seconds": 2}'}),
        (
            {**MANUAL, "limits": {"disk_mb": 1}},
            {"limits": "unknown limit 'disk_mb' (allowed: cpu_seconds, wall_seconds, memory_mb)"},
        ),
        ({**MANUAL, "limits": {"cpu_seconds": True}}, {"limits": "cpu_seconds must be a number"}),
        ({**MANUAL, "limits": {"memory_mb": 0}}, {"limits": "memory_mb must be greater than 0"}),
        (
            {**MANUAL, "limits": {"wall_seconds": 31}},
            {"limits": "wall_seconds may not exceed the platform default of 30"},
        ),
    ],
)
def test_a_bad_value_is_named_with_what_is_wrong(tenant_id, problems, data, expected):
    assert problems(data, tenant_id) == expected


def test_every_bad_limit_is_named_in_the_one_limits_message(tenant_id, problems):
    bad = {"cpu_seconds": 0, "wall_seconds": "soon", "memory_mb": 65}
    assert problems({**MANUAL, "limits": bad}, tenant_id) == {
        "limits": "cpu_seconds must be greater than 0; wall_seconds must be a number; "
        "memory_mb may not exceed the platform default of 64"
    }


def test_every_bad_field_is_reported_at_once(tenant_id, problems):
    found = problems({"name": "", "type": "cron", "source": "", "cron_expression": "* *"}, tenant_id)
    assert set(found) == {"name", "source", "cron_expression"}


def test_a_cron_expression_error_comes_from_the_parser(tenant_id, problems):
    message = problems({**CRON, "cron_expression": "61 * * * *"}, tenant_id)["cron_expression"]
    assert "minute" in message and "61" in message


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/", None),
        ("/orders/{id}/lines", None),
        ("orders", "must start with /"),
        ("/orders/", "must not end with /"),
        ("/a//b", "must not contain an empty segment (//)"),
        ("/a/../b", "must not contain . or .. segments"),
        ("/a/{id}/{id}", "parameter {id} appears twice"),
        (
            "/a\n/usr/bin/id",  # a newline would end the page's curl line and start a command
            "segment 'a\\n' has characters not allowed in a path (use letters, digits, -._~ or a {name} parameter)",
        ),
        (
            "/a b",
            "segment 'a b' has characters not allowed in a path (use letters, digits, -._~ or a {name} parameter)",
        ),
    ],
)
def test_endpoint_paths(path, problem):
    assert path_problem(path) == problem


def test_parameter_names_do_not_make_a_route_different():
    assert route_key("/orders/{id}") == route_key("/orders/{order_id}") == "/orders/{}"


def test_a_clash_is_409_naming_the_other_script(tenant_id, check, client, make_user, make_token):
    make_user("ann@acme.test")
    headers = {"Authorization": f"Bearer {make_token('ann@acme.test')}"}
    assert client.post("/api/v1/scripts", json={**ENDPOINT, "name": "first"}, headers=headers).status_code == 201
    with pytest.raises(ValidationFailed) as failed:
        check({**ENDPOINT, "name": "first", "endpoint_path": "/orders/{oid}"}, tenant_id)
    assert failed.value.status == 409
    assert failed.value.fields == {
        "name": "a script named 'first' already exists",
        "endpoint_path": "POST /orders/{oid} is already served by script 'first'",
    }
