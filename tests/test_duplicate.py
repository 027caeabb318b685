"""Duplicate: /scripts/new?duplicate=<id> opens the new-script form filled from the script, with a
free name and endpoint route; nothing is saved until the form is sent."""

import html
import re

import pytest

from tests.test_rerun import _script
from webapp.scripts.duplicate import copy_name, copy_path


def _value(page: str, field: str) -> str:
    found = re.search(rf'<input id="{field}" name="{field}"[^>]*?value="([^"]*)"', page)
    assert found, page
    return html.unescape(found[1])


def _selected(page: str, field: str) -> str:
    select = re.search(rf'<select id="{field}" name="{field}".*?</select>', page, re.S)
    assert select, page
    found = re.search(r'<option (?:value="([^"]*)" )?selected>([^<]*)<', select[0])
    assert found, select[0]
    return found[1] or found[2]


@pytest.mark.parametrize(
    ("path", "copy", "second"),
    [
        ("/hello", "/hello-copy", "/hello-copy-2"),
        ("/orders/{id}/refunds/{rid}", "/orders/{id}/refunds-copy/{rid}", "/orders/{id}/refunds-copy-2/{rid}"),
        ("/{id}", "/copy/{id}", "/copy-2/{id}"),
        ("/", "/copy", "/copy-2"),
    ],
)
def test_copy_path_suffixes_the_last_literal_segment(path, copy, second):
    assert copy_path(path, 1) == copy and copy_path(path, 2) == second


def test_copy_name_keeps_within_the_fields_length():
    assert copy_name("Nightly", 1) == "Nightly (copy)" and copy_name("Nightly", 3) == "Nightly (copy 3)"
    assert len(copy_name("x" * 100, 12)) == 100 and copy_name("x" * 100, 12).endswith("x (copy 12)")


def test_duplicate_prefills_the_form_and_saves_nothing(app, client, editor_session):
    headers = {"X-CSRFToken": editor_session}
    original = _script(
        client,
        headers,
        name="Refunds",
        description="Refund <webhook>",
        type="endpoint",
        endpoint_path="/orders/{id}/refunds",
        endpoint_method="POST",
        status="disabled",
        limits={"wall_seconds": 2},
        source="async function main(req) {\n  return { status: 200, body: req.params };\n}\n",
    )
    page = client.get(f"/scripts/{original['id']}").get_data(as_text=True)
    assert f'href="/scripts/new?duplicate={original["id"]}"' in page

    form = client.get(f"/scripts/new?duplicate={original['id']}").get_data(as_text=True)
    assert "<h1>New script</h1>" in form and 'action="/scripts/new"' in form
    assert _value(form, "name") == "Refunds (copy)" and _value(form, "description") == "Refund <webhook>"
    assert _selected(form, "type") == "endpoint" and _selected(form, "status") == "disabled"
    assert _value(form, "endpoint_path") == "/orders/{id}/refunds-copy"
    assert _selected(form, "endpoint_method") == "POST" and _value(form, "limits_wall_seconds") == "2"
    assert "return { status: 200, body: req.params };" in html.unescape(form)
    listed = client.get("/api/v1/scripts", headers=headers).get_json()
    assert listed["total"] == 1  # nothing saved

    # A copy exists: the next is "(copy 2)" on "-copy-2".
    _script(
        client,
        headers,
        name="Refunds (copy)",
        type="endpoint",
        endpoint_path="/orders/{x}/refunds-copy",
        endpoint_method="POST",
    )
    again = client.get(f"/scripts/new?duplicate={original['id']}").get_data(as_text=True)
    assert (
        _value(again, "name") == "Refunds (copy 2)" and _value(again, "endpoint_path") == "/orders/{id}/refunds-copy-2"
    )


def test_duplicate_of_a_cron_script_keeps_its_schedule(client, editor_session):
    headers = {"X-CSRFToken": editor_session}
    cron = _script(
        client,
        headers,
        name="100% nightly_",
        type="cron",
        cron_expression="0 3 * * *",
        timezone="Europe/Berlin",
        misfire_policy="skip",
    )
    _script(client, headers, name="100% nightly_ (copy)")
    form = client.get(f"/scripts/new?duplicate={cron['id']}").get_data(as_text=True)
    assert _value(form, "name") == "100% nightly_ (copy 2)"
    assert _value(form, "cron_expression") == "0 3 * * *" and _value(form, "timezone") == "Europe/Berlin"
    assert _selected(form, "misfire_policy") == "skip"


def test_duplicate_is_for_editors_of_the_tenant(app, client, editor, make_user, login):
    original = _script(client, editor)
    make_user("spy@globex.io", "globex", "admin")
    make_user("vi@acme.io", "acme", "viewer")
    csrf = login("spy@globex.io")
    assert client.get(f"/scripts/new?duplicate={original['id']}").status_code == 404
    assert client.get("/scripts/new?duplicate=not-a-uuid").status_code == 404
    client.post("/logout", data={"csrf_token": csrf})
    login("vi@acme.io")
    assert client.get(f"/scripts/new?duplicate={original['id']}").status_code == 403
    assert "?duplicate=" not in client.get(f"/scripts/{original['id']}").get_data(as_text=True)
