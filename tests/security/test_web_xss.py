"""Hostile names, descriptions, sources, parameters, logs, results and error messages are
escaped on every page that shows them (a real browser: tests/browser/test_xss.py)."""

from markupsafe import escape

from tests.conftest import bearer
from tests.security.xss import DESCRIPTION, NAME, RAW, make_hostile


def test_hostile_text_is_escaped_on_every_page(client, make_user, make_token, login, start_worker):
    make_user("ed@acme.io", "acme", "editor")
    start_worker()
    hostile = make_hostile(client, bearer(make_token("ed@acme.io")))
    csrf = login("ed@acme.io")
    shown = {}
    for url in hostile.pages():
        for htmx in (False, True):
            response = client.get(url, headers={"HX-Request": "true"} if htmx else {})
            assert response.status_code == 200, (url, htmx, response.status_code)
            page = response.get_data(as_text=True)
            assert not RAW.search(page), (url, htmx, RAW.search(page))
            shown[url] = page
    # The run panel, as htmx swaps it in after a click on Run.
    run = client.post(
        f"/scripts/{hostile.script_id}/run",
        data={"csrf_token": csrf, "params": '{"p": "<script>alert(1)</script>"}'},
        headers={"HX-Request": "true"},
    )
    assert run.status_code == 200 and not RAW.search(run.get_data(as_text=True))
    # The test would catch a regression: the escaped text is there, where it is shown.
    name, description = str(escape(NAME)), str(escape(DESCRIPTION))
    assert name in shown["/scripts"] and name in shown[f"/scripts/{hostile.script_id}"] and name in shown["/"]
    assert description in shown["/scripts"]
    detail = shown[f"/executions/{hostile.succeeded_id}"]
    assert "&lt;script&gt;alert(&#39;log&#39;)&lt;/script&gt;" in detail
    assert "&lt;img src=x onerror=alert(&#39;result&#39;)&gt;" in detail
    assert "&lt;svg onload=alert(&#39;error&#39;)&gt;" in shown[f"/executions/{hostile.failed_id}"]
