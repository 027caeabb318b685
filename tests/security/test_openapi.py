"""GET /api/v1/openapi.json describes the REST API exactly: every /api/v1 rule of the URL map
and no other, and (schemathesis, against a live server with a real worker) no answer is a 5xx
or breaks the documented status codes, content types, headers and schemas."""

import itertools
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.conftest import bearer
from tests.security.web import SECRET_NAME, make_world
from webapp.api.openapi import build_document

DOC = build_document()
PREFIX = DOC["servers"][0]["url"]
SCHEMA = schemathesis.openapi.from_dict(build_document())
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
NEGATIVE_CHECKS = [checks.not_a_server_error, checks.content_type_conformance]
EXAMPLES_PER_OPERATION = 40  # per operation and mode: ~15 s per database in all


def _documented() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {(m.upper(), PREFIX + path) for path, item in DOC["paths"].items() for m in item if m in methods}


def _served(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX + "/"):
            path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
            found |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def test_the_document_names_every_api_rule_and_no_other(app):
    assert _served(app) == _documented()


def test_the_document_is_public_and_is_the_built_document(client):
    response = client.get(f"{PREFIX}/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == DOC
    assert DOC["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token, `srt_…`",
    }


@pytest.fixture
def seeded(app, client, make_user, make_token, start_worker):
    """A tenant with a script, a finished run of it, and the owner's admin token."""
    world = make_world(app, make_user, make_token)
    headers = bearer(make_token("owner@acme.io"))
    start_worker()
    run = client.post(f"/api/v1/scripts/{world.script_id}/run", json={"wait": 20}, headers=headers)
    assert run.status_code == 200, run.get_json()
    return world, headers, run.get_json()["id"]


def _strategy(operation, world, execution_id: str, mode: GenerationMode):
    """Generated cases, and as many that name the tenant's real objects (else nearly all
    would be 404s). DELETE keeps generated ids: the real script must outlive the run."""
    real = {"script_id": world.script_id, "execution_id": execution_id, "version": 1, "name": SECRET_NAME}
    names = {p.name for p in operation.iter_parameters() if p.location == "path"}
    if not names or operation.method.upper() == "DELETE":
        return operation.as_strategy(mode)
    return st.one_of(
        operation.as_strategy(mode), operation.as_strategy(mode, path_parameters={n: real[n] for n in names})
    )


def _has_inputs(operation) -> bool:
    return any(True for _ in operation.iter_parameters()) or bool(operation.get_request_payload_content_types())


def test_schemathesis_finds_no_server_error_and_no_schema_break(live_server, seeded):
    world, headers, execution_id = seeded
    operations = sorted((result.ok() for result in SCHEMA.get_all_operations()), key=lambda o: o.method == "delete")
    assert len(operations) == len(_documented())
    session = requests.Session()
    # Valid requests must get documented answers; invalid ones (negative mode) a 4xx, never a 5xx.
    modes = [(GenerationMode.POSITIVE, CHECKS), (GenerationMode.NEGATIVE, NEGATIVE_CHECKS)]
    for (mode, checks_), operation in itertools.product(modes, operations):
        if mode == GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to make invalid

        @given(case=_strategy(operation, world, execution_id, mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,  # the same cases on every run: a failure here is reproducible
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate(
                base_url=live_server + PREFIX,
                session=session,
                headers=headers,
                checks=checks_,  # noqa: B023  (check runs at once, in this iteration)
            )

        check()


def test_what_schemathesis_found_answers_4xx(client, make_user, make_token):
    """500s it found, kept as plain regression checks: numbers past the database's integers,
    and JSON nested deeper than Python parses."""
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    body = {"name": "s", "type": "manual", "source": "function main() {}"}
    script_id = client.post("/api/v1/scripts", json=body, headers=headers).get_json()["id"]
    huge = 34280839951770189824000
    assert client.get(f"/api/v1/scripts?page={huge}", headers=headers).status_code == 422
    assert client.get(f"/api/v1/scripts/{script_id}/executions?page={huge}", headers=headers).status_code == 422
    assert client.get(f"/api/v1/scripts/{script_id}/versions/{huge}", headers=headers).status_code == 404
    rollback = client.post(f"/api/v1/scripts/{script_id}/rollback", json={"version": huge}, headers=headers)
    assert rollback.status_code == 404 and rollback.get_json()["error"]["fields"] == {
        "version": f"version {huge} does not exist"
    }
    deep = "[" * 100_000 + "]" * 100_000
    for url in ("/api/v1/scripts", f"/api/v1/scripts/{script_id}/run", "/api/v1/cron/validate"):
        response = client.post(url, data=deep, content_type="application/json", headers=headers)
        assert response.status_code == 400, url
        assert response.get_json()["error"]["code"] == "bad_request"


def test_the_ui_lists_answer_a_huge_page_with_the_first_page(client, make_user, login):
    make_user("ed@acme.io", "acme", "editor")
    login("ed@acme.io")
    huge = 34280839951770189824000
    for url in (f"/scripts?page={huge}", f"/executions?page={huge}"):
        response = client.get(url)
        assert response.status_code == 200, url
