"""A script's page stays current without a reload (issue 14, bug 5): a run started from the Run
panel appears in "Latest executions" with its outcome, and a cron script's next fire moves on
and its list grows while the page is open."""

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.test_run import assert_same_page, open_script

EDITOR = "ed@acme.io"
TICK = "function main(event) {\n  return { at: event.scheduled_at };\n}\n"
# The status of the list's next poll, once htmx has handled it (swapped or not); null after 5 s.
NEXT_POLL = """() => new Promise((resolve) => {
  setTimeout(() => resolve(null), 5000);
  document.body.addEventListener("htmx:afterRequest", (ev) => {
    if (ev.detail.elt.id === "latest-executions") resolve(ev.detail.xhr.status);
  });
})"""
FIRES_MS = 12_000  # a few fires of @every 2s, with room for a slow, shared machine


def test_a_run_from_the_page_appears_in_latest_executions(page: Page, live_server: str, greeter: str) -> None:
    url = open_script(page, live_server, greeter)
    latest = page.locator("#latest-executions")
    expect(latest).to_contain_text("No executions yet.")

    page.get_by_label("Parameters (JSON object)").fill('{"name": "Ann"}')
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#run-result .badge")).to_have_text("succeeded")
    rows = latest.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge")).to_have_text("succeeded")
    expect(rows.first).to_contain_text("manual")
    expect(latest).not_to_contain_text("No executions yet.")
    assert_same_page(page, url)

    # A poll that brings nothing new leaves the list alone: a keyboard user keeps their place.
    link = rows.first.get_by_role("link")
    link.focus()
    assert page.evaluate(NEXT_POLL) == 200
    expect(link).to_be_focused()

    # The row leads to the run.
    rows.first.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/executions/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Execution succeeded")


def test_a_cron_scripts_page_follows_its_fires(
    page: Page,
    live_server: str,
    make_user,
    log_in: Callable,
    make_script: Callable,
    start_worker: Callable,
    start_scheduler: Callable,
) -> None:
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    script_id = make_script(EDITOR, name="ticker", type="cron", cron_expression="@every 2s", source=TICK)
    start_worker()
    start_scheduler()
    url = open_script(page, live_server, script_id)

    next_fire = page.locator("#next-fire time")
    expect(next_fire).to_have_count(1, timeout=FIRES_MS)  # scheduled (the page may open before the scheduler)
    first = next_fire.get_attribute("datetime")
    expect(next_fire).not_to_have_attribute("datetime", first, timeout=FIRES_MS)

    rows = page.locator("#latest-executions tbody tr")
    expect(rows.nth(1)).to_be_visible(timeout=FIRES_MS)  # at least two fires listed
    expect(rows.first).to_contain_text("cron")
    expect(page.locator("#last-fire .badge")).to_have_text(re.compile("queued|running|succeeded"))
    expect(page.locator("#last-fire")).not_to_contain_text("never fired yet")
    assert_same_page(page, url)
