"""The script form's cron preview (GET /scripts/cron-preview), the partial htmx swaps in as
the expression or the timezone changes."""

import itertools
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

HTMX = {"HX-Request": "true", "HX-Target": "cron-preview"}


@pytest.fixture
def viewer(make_user, login) -> None:
    make_user("vi@acme.io", "acme", "viewer")
    login("vi@acme.io")


def _preview(client, expression: str | None, timezone: str | None = None) -> str:
    args = {k: v for k, v in {"cron_expression": expression, "timezone": timezone}.items() if v is not None}
    response = client.get("/scripts/cron-preview", query_string=args, headers=HTMX)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _fires(html: str) -> list[datetime]:
    return [datetime.fromisoformat(at) for at in re.findall(r'<time datetime="([^"]+)"', html)]


def _message(html: str) -> str:
    return re.search(r"<p>(.*?)</p>", html, re.S).group(1).strip()


def test_a_valid_expression_shows_what_it_means_and_the_next_fires_in_its_timezone(client, viewer):
    html = _preview(client, "0 9 * * *", "Europe/Berlin")
    assert 'class="cron-preview valid"' in html
    assert _message(html) == "At 09:00 AM (Europe/Berlin time)"
    assert "Next fires, in your local time:" in html
    fires = _fires(html)
    assert len(fires) == 5
    berlin = [f.astimezone(ZoneInfo("Europe/Berlin")) for f in fires]
    assert all((f.hour, f.minute, f.second) == (9, 0, 0) for f in berlin), fires
    assert all(later.date() - earlier.date() == timedelta(days=1) for earlier, later in itertools.pairwise(berlin))


def test_without_a_timezone_the_preview_is_in_utc(client, viewer):
    html = _preview(client, "*/5 * * * *")
    assert _message(html) == "Every 5 minutes (UTC time)"
    assert all(f.utcoffset() == timedelta(0) and f.minute % 5 == 0 for f in _fires(html))


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("61 * * * *", "UTC", "minute: 61 is out of range 0-59"),
        ("0 9 * * FOO", "UTC", "day-of-week: &#39;FOO&#39; is not a valid value"),
        ("@daily", "Mars/Base", "unknown timezone &#39;Mars/Base&#39;"),
    ],
)
def test_an_invalid_expression_or_timezone_shows_what_is_wrong(client, viewer, expression, timezone, message):
    html = _preview(client, expression, timezone)
    assert 'class="cron-preview invalid"' in html
    assert _message(html) == message
    assert _fires(html) == [] and "Next fires" not in html


def test_nothing_typed_shows_nothing(client, viewer):
    html = _preview(client, "  ", "UTC")
    assert 'class="cron-preview"' in html and "<p>" not in html


def test_the_tenant_does_not_matter(client, make_user, login):
    """A pure function of what is typed: a member of any tenant, whatever its role, sees the same."""
    make_user("vi@acme.io", "acme", "viewer")
    make_user("ad@globex.io", "globex", "admin")
    seen = []
    for email in ("vi@acme.io", "ad@globex.io"):
        csrf = login(email)
        html = _preview(client, "0 9 * * MON-FRI", "America/New_York")
        seen.append((_message(html), [f.astimezone(ZoneInfo("America/New_York")).hour for f in _fires(html)]))
        client.post("/logout", data={"csrf_token": csrf})
    assert seen[0] == seen[1] == ("At 09:00 AM, Monday through Friday (America/New_York time)", [9] * 5)


def test_the_edit_form_shows_the_saved_schedules_preview_at_once(client, make_user, login):
    make_user("ed@acme.io", "acme", "editor")
    csrf = login("ed@acme.io")
    form = {
        "csrf_token": csrf,
        "name": "nightly",
        "type": "cron",
        "status": "active",
        "source": "function main() {}",
        "cron_expression": "30 2 * * *",
        "timezone": "Europe/Berlin",
    }
    created = client.post("/scripts/new", data=form)
    page = client.get(created.headers["Location"] + "/edit").get_data(as_text=True)
    assert 'class="cron-preview valid"' in page
    assert "At 02:30 AM (Europe/Berlin time)" in page and len(_fires(page)) == 5
    box = re.search(r'<div id="cron-preview-box"[^>]*>', page).group(0)  # asks again as the user types
    assert 'hx-get="/scripts/cron-preview"' in box and 'hx-include="#cron_expression, #timezone"' in box


def test_after_the_session_ends_the_login_leads_back_to_the_form_not_the_fragment(client):
    headers = {**HTMX, "HX-Current-URL": "http://localhost/scripts/new?type=cron"}
    response = client.get("/scripts/cron-preview", query_string={"cron_expression": "* * * * *"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/login?next=/scripts/new?type%3Dcron"
