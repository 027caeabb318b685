"""The storage browser in Chromium: an editor finds it in the menu, filters keys by prefix,
pages through them, opens a key with awkward characters, reads its value as text (never as
markup), and deletes it after confirming; a viewer has no menu entry and gets 403."""

from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.test_dashboard import watch_console
from tests.storage import store

EDITOR = "ed@acme.io"
ODD_KEY = "reports/2026 Q1/naïve café ✓ #1?a=b&c=%20"
VALUE = {"html": "<img src=x onerror=alert(1)>", "rows": [1, 2]}


def test_list_filter_page_view_and_delete(
    page: Page, app: Flask, live_server: str, make_user, log_in: Callable
) -> None:
    problems = watch_console(page)
    dialogs: list[str] = []
    make_user(EDITOR, "acme", "editor")
    make_user("eve@globex.io", "globex", "editor")
    store(app, "acme", {f"user:{n:02}": {"n": n} for n in range(25)})
    store(app, "acme", {ODD_KEY: VALUE})
    store(app, "globex", {"globex:secret": 1})
    log_in(page, EDITOR)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Storage").click()
    expect(page).to_have_url(f"{live_server}/storage")
    expect(page.get_by_role("heading", name="Storage", level=1)).to_be_visible()
    pager = page.get_by_role("navigation", name="Pages")
    expect(pager).to_contain_text("Page 1 of 2 (26 keys)")
    keys = page.locator("td.storage-key")
    expect(keys).to_have_count(20)
    expect(keys.first).to_have_text(ODD_KEY)
    expect(page.get_by_text("globex:secret")).to_have_count(0)

    pager.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(f"{live_server}/storage?page=2")
    expect(keys).to_have_text([f"user:{n:02}" for n in range(19, 25)])

    page.get_by_label("Key prefix").fill("user:1")  # htmx swaps the table as one types
    expect(keys).to_have_text([f"user:{n}" for n in range(10, 20)])
    expect(page).to_have_url(f"{live_server}/storage?prefix=user%3A1")
    expect(page.locator("#storage-table")).to_contain_text("10 keys")
    page.get_by_label("Key prefix").fill("nothing-here")
    expect(page.locator("#storage-table")).to_have_text("No keys start with “nothing-here”. Show all.")
    page.get_by_role("link", name="Show all").click()
    expect(keys).to_have_count(20)

    page.get_by_role("link", name=ODD_KEY).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Key {ODD_KEY}")
    value = page.get_by_role("region", name="Value").locator("pre")
    expect(value).to_have_text('{\n  "html": "<img src=x onerror=alert(1)>",\n  "rows": [\n    1,\n    2\n  ]\n}')
    expect(page.locator("main img")).to_have_count(0)  # shown as text, not markup

    # Dismissing the confirmation keeps the key; accepting deletes it.
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete key").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Key {ODD_KEY}")
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Delete key").click()
    expect(page).to_have_url(f"{live_server}/storage")
    expect(page.get_by_role("status")).to_have_text(f"Key “{ODD_KEY}” deleted.")
    expect(keys.first).to_have_text("user:00")
    expect(pager).to_contain_text("(25 keys)")
    assert dialogs == [f"Delete the key “{ODD_KEY}”? Scripts reading it will get null."] * 2
    page.reload()  # post/redirect/get: reloading deletes nothing more, and the message is gone
    expect(pager).to_contain_text("(25 keys)")
    expect(page.get_by_role("status")).to_be_empty()
    assert problems == []


def test_a_viewer_has_no_storage_link_and_gets_403(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    make_user("viewer@acme.io", "acme", "viewer")
    log_in(page, "viewer@acme.io")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Scripts")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Storage")).to_have_count(0)
    response = page.goto(f"{live_server}/storage")
    assert response is not None and response.status == 403
