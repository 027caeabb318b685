"""The /settings page in Chromium: an admin restricts the hosts scripts may fetch, is told
which entry is wrong, sees the list saved after a reload, and finds the change in the audit log."""

from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.test_dashboard import watch_console
from webapp.extensions import db
from webapp.models import Tenant

ADMIN = "boss@acme.io"


def _stored(app: Flask) -> list | None:
    with app.app_context():
        return db.session.scalar(db.select(Tenant.fetch_allowed_hosts).where(Tenant.name == "acme"))


def test_an_admin_sets_the_allowed_hosts(page: Page, app: Flask, live_server: str, make_user, log_in: Callable) -> None:
    problems = watch_console(page)
    make_user(ADMIN, "acme", "admin")
    log_in(page, ADMIN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page).to_have_url(f"{live_server}/settings")
    expect(page.get_by_role("heading", name="Outbound HTTP (fetch)")).to_be_visible()
    expect(page.get_by_label("Scripts may fetch any public host")).to_be_checked()

    page.get_by_label("Scripts may fetch only these hosts").check()
    hosts = page.get_by_label("Allowed hosts")
    hosts.fill("api.github.com\nhooks.slack.com/services")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("alert")).to_contain_text("'hooks.slack.com/services' is not a host name")
    expect(hosts).to_have_value("api.github.com\nhooks.slack.com/services")  # kept, to correct
    expect(hosts).to_have_attribute("aria-invalid", "true")
    assert _stored(app) is None

    hosts.fill("API.GitHub.com, *.slack.com\napi.github.com")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_have_text("Saved: scripts may fetch only 2 host patterns.")
    page.reload()
    expect(page.get_by_label("Scripts may fetch only these hosts")).to_be_checked()
    expect(page.get_by_label("Allowed hosts")).to_have_value("api.github.com\n*.slack.com")
    assert _stored(app) == ["api.github.com", "*.slack.com"]

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    row = page.get_by_role("row").filter(has_text="settings.update")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("fetch_allowed_hosts: — → [api.github.com, *.slack.com]")
    assert [p for p in problems if "status of 422" not in p] == []  # the refused POST is the only one
