"""The script page's live parts (templates/_live.html): the "Latest executions" list and a cron
script's fires, polled as htmx partials; tenant-scoped like the page."""

import re
import uuid

from tests.test_rerun import _recorded, _script

HTMX = {"HX-Request": "true"}


def _digest(html: str, part: str) -> str:
    match = re.search(rf'<div id="{part}" class="live" data-live data-digest="([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


def test_latest_executions_part_follows_new_runs(app, client, editor_session):
    script = _script(client, {"X-CSRFToken": editor_session})
    page = client.get(f"/scripts/{script['id']}").get_data(as_text=True)
    url = f"/scripts/{script['id']}/latest-executions"
    assert f'hx-get="{url}"' in page and "executions-changed from:body" in page and "No executions yet." in page
    before = _digest(page, "latest-executions")

    part = client.get(url, headers=HTMX)
    assert part.status_code == 200 and "<html" not in part.get_data(as_text=True)
    assert _digest(part.get_data(as_text=True), "latest-executions") == before  # nothing new: the same digest

    run_id = _recorded(app, script["id"], params={})
    html = client.get(url, headers=HTMX).get_data(as_text=True)
    assert f'href="/executions/{run_id}"' in html and "No executions yet." not in html
    assert _digest(html, "latest-executions") != before


def test_a_run_from_the_page_tells_the_list_to_refresh(client, editor_session, start_worker):
    start_worker()
    script = _script(client, {"X-CSRFToken": editor_session})
    ran = client.post(
        f"/scripts/{script['id']}/run",
        data={"csrf_token": editor_session, "params": "{}"},
        headers={**HTMX, "HX-Target": "run-result"},
    )
    assert ran.status_code == 200 and ran.headers["HX-Trigger"] == "executions-changed"


def test_cron_schedule_part(client, editor_session):
    headers = {"X-CSRFToken": editor_session}
    cron = _script(client, headers, type="cron", cron_expression="*/5 * * * *")
    manual = _script(client, headers)
    page = client.get(f"/scripts/{cron['id']}").get_data(as_text=True)
    assert f'hx-get="/scripts/{cron["id"]}/schedule"' in page
    part = client.get(f"/scripts/{cron['id']}/schedule", headers=HTMX).get_data(as_text=True)
    assert "Next fire</dt>" in part and "never fired yet" in part and part.count("<time") == 1 + 5
    assert client.get(f"/scripts/{manual['id']}/schedule", headers=HTMX).status_code == 204
    assert "/schedule" not in client.get(f"/scripts/{manual['id']}").get_data(as_text=True)


def test_live_parts_are_tenant_scoped(app, client, editor, make_user, login):
    cron = _script(client, editor, type="cron", cron_expression="*/5 * * * *")
    _recorded(app, cron["id"], params={})
    make_user("spy@globex.io", "globex", "viewer")
    make_user("vi@acme.io", "acme", "viewer")
    urls = [f"/scripts/{cron['id']}/latest-executions", f"/scripts/{cron['id']}/schedule"]
    for url in urls:  # logged out: htmx is sent to the login page
        assert client.get(url, headers=HTMX).headers["HX-Redirect"].startswith("/login")
    csrf = login("spy@globex.io")
    for url in [*urls, f"/scripts/{uuid.uuid4()}/schedule", "/scripts/not-a-uuid/latest-executions"]:
        assert client.get(url, headers=HTMX).status_code == 404
    client.post("/logout", data={"csrf_token": csrf})
    login("vi@acme.io")
    for url in urls:
        assert client.get(url, headers=HTMX).status_code == 200


def test_one_scripts_executions_list_is_live_on_its_first_page(app, client, editor_session):
    script = _script(client, {"X-CSRFToken": editor_session})
    for _ in range(21):
        _recorded(app, script["id"], params={})
    first = client.get(f"/executions?script={script['id']}").get_data(as_text=True)
    assert f'hx-get="/executions?script={script["id"]}"' in first and "data-live" in first
    assert "data-live" not in client.get(f"/executions?script={script['id']}&page=2").get_data(as_text=True)
    assert "data-live" not in client.get("/executions").get_data(as_text=True)
    partial = client.get(f"/executions?script={script['id']}", headers={**HTMX, "HX-Target": "execution-table"})
    assert partial.get_data(as_text=True).lstrip().startswith('<div id="execution-table" class="live" data-live')
