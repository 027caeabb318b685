"""Script pages without a browser: forms, validation beside fields, partials, versions."""

import html
import re

from werkzeug.exceptions import Forbidden, NotFound

from tests.conftest import SOURCE, bearer
from webapp.scripts.starters import STARTERS


def _form(csrf: str, **fields) -> dict:
    return {"csrf_token": csrf, "name": "job", "type": "manual", "status": "active", "source": SOURCE, **fields}


def _script_id(response) -> str:
    return response.headers["Location"].rsplit("/", 1)[1]


def test_create_each_type_through_the_form(client, editor_session):
    cases = [
        _form(editor_session, name="by-hand"),
        _form(
            editor_session,
            name="nightly",
            type="cron",
            cron_expression="30 2 * * *",
            timezone="Europe/Berlin",
            misfire_policy="skip",
        ),
        _form(editor_session, name="hello", type="endpoint", endpoint_method="POST", endpoint_path="/hello/{who}"),
    ]
    for data in cases:
        response = client.post("/scripts/new", data=data)
        assert response.status_code == 303, response.get_data(as_text=True)
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        assert f"<h1>{data['name']}</h1>" in page
    api = client.get("/api/v1/scripts").get_json()
    assert {s["name"]: s["type"] for s in api["items"]} == {"by-hand": "manual", "nightly": "cron", "hello": "endpoint"}
    nightly = next(s for s in api["items"] if s["name"] == "nightly")
    assert nightly["misfire_policy"] == "skip" and nightly["timezone"] == "Europe/Berlin"


def test_cron_page_shows_schedule_and_endpoint_page_shows_url_and_curl(client, editor_session):
    cron = client.post("/scripts/new", data=_form(editor_session, name="c", type="cron", cron_expression="*/5 * * * *"))
    page = client.get(cron.headers["Location"]).get_data(as_text=True)
    assert "*/5 * * * *" in page and "Upcoming fires" in page
    ep = client.post(
        "/scripts/new",
        data=_form(editor_session, name="e", type="endpoint", endpoint_method="GET", endpoint_path="/hello"),
    )
    page = client.get(ep.headers["Location"]).get_data(as_text=True)
    assert "GET http://localhost/api/scripts/hello" in page
    assert 'curl -X GET -H "Authorization: Bearer $SCRIPT_RUNNER_TOKEN" http://localhost/api/scripts/hello' in page


def test_validation_messages_stand_beside_their_fields(client, editor_session):
    response = client.post(
        "/scripts/new",
        data=_form(
            editor_session,
            name="",
            type="cron",
            cron_expression="0 0 31 2 * *x",
            source="function main() { return 1 +; }",
        ),
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="name-error" role="alert">is required' in page
    assert re.search(r'id="cron_expression"[^>]*aria-invalid="true"', page)
    assert 'id="cron_expression-error"' in page
    assert "line 1, column" in page  # the syntax error's position
    # what the user typed is kept
    assert "function main() { return 1 +; }" in page


def test_missing_main_and_endpoint_path_rules(client, editor_session):
    page = client.post("/scripts/new", data=_form(editor_session, source="const x = 1;")).get_data(as_text=True)
    assert "must define a function main(event)" in page
    for path, message in [
        ("hello", "must start with /"),
        ("/a//b", "empty segment"),
        ("/a b", "characters not allowed"),
        ("/x/{id}/{id}", "appears twice"),
        ("/trailing/", "must not end with /"),
    ]:
        data = _form(editor_session, type="endpoint", endpoint_method="GET", endpoint_path=path)
        response = client.post("/scripts/new", data=data)
        assert response.status_code == 422, path
        assert message in response.get_data(as_text=True), path


def test_endpoint_clash_through_the_form_is_reported_beside_the_path(client, editor_session):
    client.post(
        "/scripts/new",
        data=_form(editor_session, name="a", type="endpoint", endpoint_method="GET", endpoint_path="/x/{id}"),
    )
    response = client.post(
        "/scripts/new",
        data=_form(editor_session, name="b", type="endpoint", endpoint_method="GET", endpoint_path="/x/{n}"),
    )
    assert response.status_code == 409
    assert "GET /x/{n} is already served by script &#39;a&#39;" in response.get_data(as_text=True)


def test_type_toggle_partial_and_the_no_javascript_path(client, editor_session):
    def fields(type_: str) -> str:
        return client.post("/scripts/trigger-fields", data={"csrf_token": editor_session, "type": type_}).get_data(
            as_text=True
        )

    cron = fields("cron")
    assert 'name="cron_expression"' in cron and 'name="timezone"' in cron and 'name="misfire_policy"' in cron
    assert "endpoint_path" not in cron
    endpoint = fields("endpoint")
    assert 'name="endpoint_path"' in endpoint and "<option selected>GET</option>" in endpoint
    assert "cron_expression" not in endpoint
    assert "<fieldset" not in fields("manual") and "data-starter-source" not in fields("manual")
    # Without JavaScript the form's "Show fields" button redraws it for the chosen type, saving nothing.
    page = client.post("/scripts/new", data=_form(editor_session, type="endpoint", action="refresh"))
    assert page.status_code == 200
    assert 'name="endpoint_path"' in page.get_data(as_text=True)
    assert client.get("/api/v1/scripts").get_json()["total"] == 0
    assert "<noscript>" in client.get("/scripts/new").get_data(as_text=True)


def _source_in(page: str) -> str:
    found = re.search(r'<textarea id="source"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, page
    return html.unescape(found[1])


def _starter_in(partial: str) -> str | None:
    found = re.search(r"<template data-starter-source>(.*?)</template>", partial, re.S)
    return html.unescape(found[1]) if found else None


def test_a_type_switch_replaces_an_untouched_starter_only(client, editor_session):
    """Each type starts with a source that works for it; switching the type swaps the starter
    in while nobody has edited it (htmx partial and the no-JavaScript redraw alike)."""
    assert _source_in(client.get("/scripts/new").get_data(as_text=True)) == STARTERS["manual"]
    assert _source_in(client.get("/scripts/new?type=endpoint").get_data(as_text=True)) == STARTERS["endpoint"]
    assert _source_in(client.get("/scripts/new?type=cron").get_data(as_text=True)) == STARTERS["cron"]

    def switch(type_: str, source: str) -> str | None:
        data = {"csrf_token": editor_session, "type": type_, "source": source}
        response = client.post("/scripts/trigger-fields", data=data)
        assert response.status_code == 200
        return _starter_in(response.get_data(as_text=True))

    assert switch("endpoint", STARTERS["manual"]) == STARTERS["endpoint"]
    assert switch("cron", STARTERS["endpoint"].replace("\n", "\r\n")) == STARTERS["cron"]  # as a textarea sends it
    assert switch("manual", "") == STARTERS["manual"]
    assert switch("endpoint", STARTERS["endpoint"]) is None  # already the one
    edited = STARTERS["manual"].replace("hello from", "hi from")
    assert switch("endpoint", edited) is None

    def redraw(type_: str, source: str) -> str:
        response = client.post("/scripts/new", data=_form(editor_session, type=type_, source=source, action="refresh"))
        assert response.status_code == 200
        return _source_in(response.get_data(as_text=True))

    assert redraw("cron", STARTERS["manual"]) == STARTERS["cron"]
    assert redraw("cron", edited) == edited


def test_list_filters_search_paging_and_partial(client, editor_session):
    for i in range(25):
        client.post("/scripts/new", data=_form(editor_session, name=f"job-{i:02}"))
    client.post(
        "/scripts/new",
        data=_form(editor_session, name="mailer", type="cron", cron_expression="@daily", status="disabled"),
    )
    assert "Script “mailer” created." in client.get("/scripts").get_data(as_text=True)  # shown once
    page = client.get("/scripts").get_data(as_text=True)
    assert "Page 1 of 2 (26 scripts)" in page and "job-00" in page and "mailer" not in page
    assert "mailer" in client.get("/scripts?page=2").get_data(as_text=True)
    only_cron = client.get("/scripts?type=cron&status=disabled").get_data(as_text=True)
    assert "mailer" in only_cron and "job-00" not in only_cron
    searched = client.get("/scripts?q=MAIL").get_data(as_text=True)
    assert "mailer" in searched and "job-01" not in searched
    partial = client.get("/scripts?q=job-1", headers={"HX-Request": "true", "HX-Target": "script-table"})
    text = partial.get_data(as_text=True)
    assert text.startswith('<div id="script-table">') and "<html" not in text
    assert "job-10" in text and "job-02" not in text
    assert "No scripts match" in client.get("/scripts?q=zzz").get_data(as_text=True)


def test_enable_disable_full_page_and_htmx(client, editor_session):
    sid = _script_id(client.post("/scripts/new", data=_form(editor_session)))
    response = client.post(f"/scripts/{sid}/status", data={"csrf_token": editor_session, "status": "disabled"})
    assert response.status_code == 303
    assert client.get(f"/api/v1/scripts/{sid}").get_json()["status"] == "disabled"
    fragment = client.post(
        f"/scripts/{sid}/status",
        data={"csrf_token": editor_session, "status": "active"},
        headers={"HX-Request": "true"},
    )
    text = fragment.get_data(as_text=True)
    assert text.startswith('<div id="script-status"') and ">active</span>" in text and "Disable" in text
    script = client.get(f"/api/v1/scripts/{sid}").get_json()
    assert script["status"] == "active" and script["version"] == 1
    assert (
        client.post(f"/scripts/{sid}/status", data={"csrf_token": editor_session, "status": "paused"}).status_code
        == 400
    )


def test_forms_need_the_csrf_token(client, editor_session):
    sid = _script_id(client.post("/scripts/new", data=_form(editor_session)))
    assert client.post("/scripts/new", data={**_form(editor_session), "csrf_token": ""}).status_code == 400
    assert client.post(f"/scripts/{sid}/status", data={"status": "disabled"}).status_code == 400
    assert client.post(f"/scripts/{sid}/delete", data={"confirm_name": "job"}).status_code == 400


def test_delete_asks_for_confirmation(client, editor_session):
    sid = _script_id(client.post("/scripts/new", data=_form(editor_session)))
    confirm = client.get(f"/scripts/{sid}/delete").get_data(as_text=True)
    assert "Delete “job”?" in confirm and "cannot be undone" in confirm
    wrong = client.post(f"/scripts/{sid}/delete", data={"csrf_token": editor_session, "confirm_name": "nope"})
    assert wrong.status_code == 422 and client.get(f"/scripts/{sid}").status_code == 200
    done = client.post(f"/scripts/{sid}/delete", data={"csrf_token": editor_session, "confirm_name": "job"})
    assert done.status_code == 303 and done.headers["Location"] == "/scripts"
    assert client.get(f"/scripts/{sid}").status_code == 404


def test_edit_versions_diff_and_rollback(client, editor_session):
    sid = _script_id(client.post("/scripts/new", data=_form(editor_session)))
    new_source = SOURCE.replace("ok: true", "ok: false")
    client.post(f"/scripts/{sid}/edit", data=_form(editor_session, source=new_source))
    client.post(f"/scripts/{sid}/edit", data=_form(editor_session, source=new_source, description="no new version"))
    assert client.get(f"/api/v1/scripts/{sid}").get_json()["version"] == 2
    history = client.get(f"/scripts/{sid}/versions").get_data(as_text=True)
    assert 'v2</a> <span class="badge active">current' in history and "Roll back to v1" in history
    diff = client.get(f"/scripts/{sid}/versions/2").get_data(as_text=True)
    assert '<span class="del">-  return { ok: true };</span>' in diff
    assert '<span class="add">+  return { ok: false };</span>' in diff
    rolled = client.post(f"/scripts/{sid}/versions/1/rollback", data={"csrf_token": editor_session})
    assert rolled.status_code == 303
    script = client.get(f"/api/v1/scripts/{sid}").get_json()
    assert script["version"] == 3 and script["source"] == SOURCE
    assert client.get(f"/scripts/{sid}/versions/7").status_code == 404


def test_crlf_from_browsers_is_stored_as_lf(client, editor_session):
    sid = _script_id(client.post("/scripts/new", data=_form(editor_session, source=SOURCE.replace("\n", "\r\n"))))
    assert client.get(f"/api/v1/scripts/{sid}").get_json()["source"] == SOURCE


def test_script_names_and_sources_are_escaped(client, editor_session):
    evil = '<script>alert("x")</script>'
    sid = _script_id(client.post("/scripts/new", data=_form(editor_session, name=evil, description=evil)))
    for url in ["/scripts", f"/scripts/{sid}", f"/scripts/{sid}/edit", f"/scripts/{sid}/versions", "/"]:
        page = client.get(url).get_data(as_text=True)
        assert evil not in page, url
    assert "&lt;script&gt;" in client.get(f"/scripts/{sid}").get_data(as_text=True)


def test_limits_fields(client, editor_session):
    too_high = client.post("/scripts/new", data=_form(editor_session, limits_cpu_seconds="10"))
    assert too_high.status_code == 422
    assert "CPU time (s) may not exceed the platform default of 5" in too_high.get_data(as_text=True)
    not_number = client.post("/scripts/new", data=_form(editor_session, limits_memory_mb="lots"))
    assert "Memory (MiB) must be a number" in not_number.get_data(as_text=True)
    sid = _script_id(
        client.post("/scripts/new", data=_form(editor_session, limits_cpu_seconds="2", limits_memory_mb="16"))
    )
    assert client.get(f"/api/v1/scripts/{sid}").get_json()["limits"] == {"cpu_seconds": 2, "memory_mb": 16}


def test_api_403_and_404_keep_their_json(client, make_user, make_token):
    """The HTML 403 and 404 pages have their own words; the API's errors stay as they were."""
    make_user("vi@acme.io", "acme", "viewer")
    viewer = bearer(make_token("vi@acme.io"))
    refused = client.post("/api/v1/scripts", json={"name": "x"}, headers=viewer)
    assert refused.status_code == 403
    assert refused.get_json() == {"error": {"code": "forbidden", "message": Forbidden.description, "fields": {}}}
    missing = client.get("/api/v1/scripts/00000000-0000-4000-8000-000000000000", headers=viewer)
    assert missing.status_code == 404
    assert missing.get_json() == {"error": {"code": "not_found", "message": NotFound.description, "fields": {}}}
