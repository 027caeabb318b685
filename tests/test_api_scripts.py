"""The REST API for scripts, versions and cron validation (docs/api.md)."""

from tests.conftest import SOURCE, bearer


def cron_script(**overrides) -> dict:
    body = {
        "name": "nightly",
        "type": "cron",
        "source": SOURCE,
        "cron_expression": "0 3 * * *",
        "timezone": "Europe/Berlin",
    }
    body.update(overrides)
    return body


def endpoint_script(**overrides) -> dict:
    body = {"name": "hello", "type": "endpoint", "source": SOURCE, "endpoint_path": "/hello", "endpoint_method": "GET"}
    body.update(overrides)
    return body


def test_create_and_read_a_script_of_each_type(client, editor):
    bodies = [
        {"name": "adhoc", "type": "manual", "source": SOURCE, "description": "by hand"},
        cron_script(),
        endpoint_script(endpoint_path="/orders/{id}", endpoint_method="post"),
    ]
    for body in bodies:
        response = client.post("/api/v1/scripts", json=body, headers=editor)
        assert response.status_code == 201, response.get_json()
        created = response.get_json()
        assert created["version"] == 1 and created["status"] == "active"
        assert created["created_by"] == "ed@acme.io" and created["tenant"] == "acme"
        assert created["created_at"].endswith("+00:00")
        fetched = client.get(f"/api/v1/scripts/{created['id']}", headers=editor).get_json()
        assert fetched == created
    listing = client.get("/api/v1/scripts", headers=editor).get_json()
    assert listing["total"] == 3 and listing["page"] == 1 and listing["per_page"] == 50
    assert [s["name"] for s in listing["items"]] == ["adhoc", "hello", "nightly"]
    by_name = {s["name"]: s for s in listing["items"]}
    assert by_name["nightly"]["misfire_policy"] == "run_once" and by_name["nightly"]["timezone"] == "Europe/Berlin"
    assert by_name["hello"]["endpoint_method"] == "POST" and by_name["hello"]["endpoint_path"] == "/orders/{id}"
    assert by_name["adhoc"]["cron_expression"] is None and by_name["adhoc"]["misfire_policy"] is None


def test_created_disabled(client, editor):
    body = client.post("/api/v1/scripts", json=cron_script(status="disabled"), headers=editor).get_json()
    assert body["status"] == "disabled"


def test_list_filters_search_and_paging(client, editor):
    for i in range(7):
        client.post("/api/v1/scripts", json={"name": f"job-{i}", "type": "manual", "source": SOURCE}, headers=editor)
    client.post("/api/v1/scripts", json=cron_script(name="Report Mailer", status="disabled"), headers=editor)
    get = lambda q: client.get(f"/api/v1/scripts?{q}", headers=editor).get_json()  # noqa: E731
    assert get("type=cron")["total"] == 1
    assert get("status=disabled")["items"][0]["name"] == "Report Mailer"
    assert get("q=mailer")["total"] == 1
    page2 = get("per_page=3&page=2")
    assert (
        page2["total"] == 8
        and page2["per_page"] == 3
        and [s["name"] for s in page2["items"]] == ["job-3", "job-4", "job-5"]
    )
    assert client.get("/api/v1/scripts?per_page=501", headers=editor).status_code == 422
    bad = client.get("/api/v1/scripts?page=0", headers=editor)
    assert bad.status_code == 422 and bad.get_json()["error"]["fields"] == {"page": "must be a positive integer"}
    assert (
        client.get("/api/v1/scripts?type=weird", headers=editor)
        .get_json()["error"]["fields"]["type"]
        .startswith("must be one of")
    )


def test_malformed_json_is_400(client, editor):
    response = client.post("/api/v1/scripts", data="{nope", headers={**editor, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"
    assert client.post("/api/v1/scripts", json=[1, 2], headers=editor).status_code == 400


def test_invalid_fields_are_422_with_every_field_named(client, editor):
    response = client.post(
        "/api/v1/scripts",
        json={
            "name": "",
            "type": "cron",
            "source": "function main( {",
            "cron_expression": "61 * * * *",
            "timezone": "Mars/Base",
            "limits": {"cpu_seconds": 99},
        },
        headers=editor,
    )
    assert response.status_code == 422
    fields = response.get_json()["error"]["fields"]
    assert fields["name"] == "is required"
    assert "line 1" in fields["source"]
    assert fields["cron_expression"].startswith("minute")
    assert fields["timezone"] == "unknown timezone 'Mars/Base'"
    assert fields["limits"] == "cpu_seconds may not exceed the platform default of 5"


def test_unknown_fields_are_refused(client, editor):
    response = client.post("/api/v1/scripts", json={**cron_script(), "owner": "me"}, headers=editor)
    assert response.status_code == 422 and response.get_json()["error"]["fields"] == {"owner": "unknown field"}


def test_name_clash_is_409(client, editor):
    client.post("/api/v1/scripts", json=cron_script(), headers=editor)
    response = client.post("/api/v1/scripts", json=cron_script(), headers=editor)
    assert response.status_code == 409
    assert response.get_json()["error"]["fields"] == {"name": "a script named 'nightly' already exists"}


def test_endpoint_route_clash_is_409_even_with_other_parameter_names(client, editor):
    client.post("/api/v1/scripts", json=endpoint_script(name="a", endpoint_path="/orders/{id}"), headers=editor)
    response = client.post(
        "/api/v1/scripts", json=endpoint_script(name="b", endpoint_path="/orders/{order}"), headers=editor
    )
    assert response.status_code == 409
    assert (
        response.get_json()["error"]["fields"]["endpoint_path"] == "GET /orders/{order} is already served by script 'a'"
    )
    other_method = client.post(
        "/api/v1/scripts",
        json=endpoint_script(name="c", endpoint_path="/orders/{id}", endpoint_method="DELETE"),
        headers=editor,
    )
    assert other_method.status_code == 201


def test_patch_updates_and_versions(client, editor):
    script = client.post("/api/v1/scripts", json=cron_script(), headers=editor).get_json()
    url = f"/api/v1/scripts/{script['id']}"
    renamed = client.patch(
        url, json={"name": "nightly-report", "description": "sends the report"}, headers=editor
    ).get_json()
    assert renamed["version"] == 1  # name and description are not versioned
    rescheduled = client.patch(url, json={"cron_expression": "0 4 * * *"}, headers=editor).get_json()
    assert rescheduled["version"] == 2 and rescheduled["cron_expression"] == "0 4 * * *"
    disabled = client.patch(url, json={"status": "disabled"}, headers=editor).get_json()
    assert disabled["version"] == 2 and disabled["status"] == "disabled"
    unchanged = client.patch(url, json={"cron_expression": "0 4 * * *"}, headers=editor).get_json()
    assert unchanged["version"] == 2
    recoded = client.patch(url, json={"source": SOURCE + "// v3\n"}, headers=editor).get_json()
    assert recoded["version"] == 3
    retyped = client.patch(
        url, json={"type": "endpoint", "endpoint_path": "/report", "endpoint_method": "GET"}, headers=editor
    ).get_json()
    assert retyped["version"] == 4 and retyped["cron_expression"] is None and retyped["misfire_policy"] is None
    limited = client.patch(url, json={"limits": {"memory_mb": 16}}, headers=editor).get_json()
    assert limited["version"] == 5 and limited["limits"] == {"memory_mb": 16}
    versions = client.get(f"{url}/versions", headers=editor).get_json()
    assert versions["total"] == 5
    assert [v["version"] for v in versions["items"]] == [5, 4, 3, 2, 1]
    assert versions["items"][-1]["cron_expression"] == "0 3 * * *"
    assert versions["items"][3]["cron_expression"] == "0 4 * * *"
    assert client.get(f"{url}/versions/3", headers=editor).get_json()["source"].endswith("// v3\n")
    assert client.get(f"{url}/versions/9", headers=editor).status_code == 404


def test_patch_invalid_change_keeps_the_script(client, editor):
    script = client.post("/api/v1/scripts", json=cron_script(), headers=editor).get_json()
    url = f"/api/v1/scripts/{script['id']}"
    response = client.patch(url, json={"cron_expression": "* * *"}, headers=editor)
    assert response.status_code == 422
    assert client.get(url, headers=editor).get_json() == script


def test_rollback_restores_as_a_new_version(client, editor):
    script = client.post("/api/v1/scripts", json=cron_script(), headers=editor).get_json()
    url = f"/api/v1/scripts/{script['id']}"
    client.patch(url, json={"source": SOURCE + "// two\n", "cron_expression": "*/5 * * * *"}, headers=editor)
    response = client.post(f"{url}/rollback", json={"version": 1}, headers=editor)
    assert response.status_code == 200
    restored = response.get_json()
    assert restored["version"] == 3
    assert restored["source"] == SOURCE and restored["cron_expression"] == "0 3 * * *"
    assert client.post(f"{url}/rollback", json={"version": 42}, headers=editor).status_code == 404
    assert client.post(f"{url}/rollback", json={"version": "1"}, headers=editor).status_code == 422


def test_delete(client, editor):
    script = client.post("/api/v1/scripts", json=cron_script(), headers=editor).get_json()
    url = f"/api/v1/scripts/{script['id']}"
    assert client.delete(url, headers=editor).status_code == 204
    assert client.get(url, headers=editor).status_code == 404
    assert client.get(f"{url}/versions", headers=editor).status_code == 404


def test_unknown_and_malformed_ids_are_404(client, editor):
    assert client.get("/api/v1/scripts/00000000-0000-0000-0000-000000000000", headers=editor).status_code == 404
    response = client.get("/api/v1/scripts/not-a-uuid", headers=editor)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/executions/not-a-uuid", headers=editor).status_code == 404


def test_executions_listing_is_empty_before_any_run(client, editor):
    script = client.post("/api/v1/scripts", json=cron_script(), headers=editor).get_json()
    body = client.get(f"/api/v1/scripts/{script['id']}/executions", headers=editor).get_json()
    assert body == {"items": [], "page": 1, "per_page": 50, "total": 0}


def test_cron_validate(client, editor):
    ok = client.post(
        "/api/v1/cron/validate", json={"expression": "0 9 * * MON-FRI", "timezone": "UTC"}, headers=editor
    ).get_json()
    assert ok["valid"] is True and ok["error"] is None
    assert ok["description"]
    assert len(ok["next"]) == 5 and all(t.endswith("+00:00") and "T09:00:00" in t for t in ok["next"])
    bad = client.post("/api/v1/cron/validate", json={"expression": "0 25 * * *"}, headers=editor).get_json()
    assert bad == {"valid": False, "description": None, "next": [], "error": "hour: 25 is out of range 0-23"}
    tz = client.post(
        "/api/v1/cron/validate", json={"expression": "@daily", "timezone": "Nowhere/City"}, headers=editor
    ).get_json()
    assert tz["valid"] is False and "Nowhere/City" in tz["error"]


def test_api_requires_authentication(client, make_user):
    make_user("ed@acme.io")
    for method, url in [
        ("get", "/api/v1/scripts"),
        ("post", "/api/v1/scripts"),
        ("post", "/api/v1/cron/validate"),
        ("get", "/api/v1/executions/x"),
    ]:
        response = getattr(client, method)(url, json={})
        assert response.status_code == 401, url
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/scripts", headers=bearer("srt_wrong")).status_code == 401


def test_session_callers_need_the_csrf_header(client, make_user, login):
    make_user("ed@acme.io")
    csrf = login("ed@acme.io")
    assert client.get("/api/v1/scripts").status_code == 200
    refused = client.post("/api/v1/scripts", json=cron_script())
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "csrf_failed"
    accepted = client.post("/api/v1/scripts", json=cron_script(), headers={"X-CSRFToken": csrf})
    assert accepted.status_code == 201
