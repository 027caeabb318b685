"""The audit log in Chromium: an admin filters and pages /audit in place (htmx), and follows a
version's "saved by … from …" link on the versions page to its entry."""

import re
from collections.abc import Callable
from datetime import timedelta

from flask import Flask
from playwright.sync_api import Page, expect

from tests.test_audit_log import _add_entries
from webapp.models import utcnow

ADMIN = "boss@acme.io"


def test_filter_and_page_the_audit_log(page: Page, app: Flask, live_server: str, make_user, log_in: Callable) -> None:
    make_user(ADMIN, "acme", "admin")
    _add_entries(app, "acme", 55, age=timedelta(days=2))
    _add_entries(app, "acme", 3, age=timedelta(days=2), action="secret.set", actor_label="ed@acme.io")
    log_in(page, ADMIN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    pager = page.get_by_role("navigation", name="Pages")
    expect(pager).to_contain_text("Page 1 of 2 (59 events)")  # and this login

    pager.get_by_role("link", name="Next →").click()
    expect(pager).to_contain_text("Page 2 of 2")
    expect(page).to_have_url(f"{live_server}/audit?page=2")
    expect(page.get_by_role("heading", name="Audit log")).to_have_count(1)  # the table was swapped, not the page

    page.get_by_label("Action").select_option("secret.set")
    expect(page.get_by_text("3 events")).to_be_visible()
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("ed@acme.io")
    page.get_by_label("Action").select_option("")
    page.get_by_label("Actor").fill(ADMIN)
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("login.success")
    expect(page).to_have_url(re.compile(r"/audit\?actor=boss%40acme\.io&"))  # a link to this view

    page.get_by_label("Actor").fill("")
    since = (utcnow() - timedelta(days=1)).date().isoformat()
    page.get_by_label("From").fill(since)
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)  # the bulk entries are two days old
    export = page.get_by_role("link", name="Export CSV")
    expect(export).to_have_attribute("href", f"/audit.csv?since={since}")  # the filters shown


def test_the_versions_page_links_each_version_to_its_entry(
    page: Page, app: Flask, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    log_in(page, ADMIN)
    page.goto(f"{live_server}/scripts/new")
    page.get_by_label("Name", exact=True).fill("nightly")
    page.get_by_role("button", name="Create script").click()
    expect(page.get_by_role("heading", name="nightly")).to_be_visible()
    script_url = page.url
    page.goto(f"{script_url}/versions")
    link = page.get_by_role("link", name=f"saved by {ADMIN} from 127.0.0.1")
    expect(link).to_have_count(1)
    link.click()
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("script.create")
    expect(rows.first).to_contain_text("nightly v1")
