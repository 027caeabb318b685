"""The hostile text of tests/security/xss.py in a real browser (Debian's chromium): no dialog
opens and no injected element appears on any page that shows it, nor in the run panel."""

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import bearer
from tests.security.xss import NAME, make_hostile

pytestmark = pytest.mark.browser
INJECTED = "img[src='x'], svg[onload], script:not([src])"


def test_no_dialog_fires_on_any_page(page: Page, live_server, client, make_user, make_token, log_in, start_worker):
    make_user("ed@acme.io", "acme", "editor")
    start_worker()
    hostile = make_hostile(client, bearer(make_token("ed@acme.io")))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, "ed@acme.io")
    for url in hostile.pages():
        page.goto(live_server + url)
        page.wait_for_load_state("load")
        assert page.locator(INJECTED).count() == 0, url
    # Run it from its page: htmx swaps the result panel (logs, result) in place.
    page.goto(f"{live_server}/scripts/{hostile.script_id}")
    expect(page.get_by_role("heading", name=NAME)).to_be_visible()
    page.get_by_label("Parameters (JSON object)").fill('{"p": "<img src=x onerror=alert(1)>"}')
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#run-result .log-message").first).to_have_text(
        "<script>alert('log')</script> \"><img src=x onerror=alert('log2')>"
    )
    assert page.locator(INJECTED).count() == 0
    assert dialogs == []
