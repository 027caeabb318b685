"""Running a script from its page in a real browser: the result and logs arrive in place
(htmx, no page load), also for a run that outlasts the first wait and comes through the
long-poll."""

import re
from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

EDITOR = "ed@acme.io"
GREET = """async function main(event) {
  console.log("hello", event.name);
  console.warn("careful");
  return { greeting: `hi ${event.name}`, n: event.n };
}
"""
SLOW = """function main(event) {
  console.log("working");
  const end = Date.now() + 1500;
  let spins = 0;
  while (Date.now() < end) spins++;
  return { done: true, slow: event.slow };
}
"""
RUN_URL = re.compile(r"/scripts/[0-9a-f-]{36}/run$")
POLL_URL = re.compile(r"/executions/[0-9a-f-]{36}/result\?wait=10$")
MARKER = "window.__runMarker"


def open_script(page: Page, live_server: str, script_id: str) -> str:
    url = f"{live_server}/scripts/{script_id}"
    page.goto(url)
    page.evaluate(f"{MARKER} = 'set before the click'")  # gone if the page is reloaded
    return url


def assert_same_page(page: Page, url: str) -> None:
    assert page.url == url
    assert page.evaluate(MARKER) == "set before the click"


def test_run_with_params_shows_result_and_logs_in_place(
    page: Page, live_server: str, make_user, log_in: Callable, make_script: Callable, start_worker: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(EDITOR, name="greeter", source=GREET)
    start_worker()
    log_in(page, EDITOR)
    url = open_script(page, live_server, script_id)

    params = page.get_by_label("Parameters (JSON object)")
    expect(params).to_have_value("{}")
    # Invalid JSON: the message appears beside the field, in place, and nothing runs.
    params.fill('{"name": "Ann",}')
    with page.expect_response(RUN_URL) as refused:
        page.get_by_role("button", name="Run", exact=True).click()
    assert refused.value.status == 200 and refused.value.headers["hx-retarget"] == "#run-form"
    error = page.locator("#run-params-error")
    expect(error).to_contain_text("Parameters is not valid JSON: Expecting property name enclosed in double quotes")
    expect(params).to_have_attribute("aria-invalid", "true")
    expect(params).to_have_value('{"name": "Ann",}')
    assert_same_page(page, url)

    params.fill('{"name": "Ann", "n": 2}')
    with page.expect_response(RUN_URL) as run:
        page.get_by_role("button", name="Run", exact=True).click()
    assert run.value.status == 200
    result = page.locator("#run-result")
    expect(result.locator(".badge")).to_have_text("succeeded")
    expect(result.locator("pre.run-value")).to_have_text('{\n  "greeting": "hi Ann",\n  "n": 2\n}')
    logs = result.locator(".logs li")
    expect(logs).to_have_count(2)
    expect(logs.nth(0).locator(".log-level")).to_have_text("log")
    expect(logs.nth(0).locator(".log-message")).to_have_text("hello Ann")
    expect(logs.nth(1).locator(".log-level")).to_have_text("warn")
    expect(logs.nth(1).locator(".log-message")).to_have_text("careful")
    expect(error).to_have_count(0)  # the earlier error is gone
    expect(page.locator("#run-button")).to_be_focused()  # keyboard users stay where they were
    assert_same_page(page, url)

    # The result links to the execution's own page.
    result.get_by_role("link", name="Execution details").click()
    page.wait_for_url(re.compile(r"/executions/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Execution succeeded")
    expect(page.locator(".logs li")).to_have_count(2)
    page.get_by_role("link", name="greeter").first.click()
    page.wait_for_url(url)
    expect(page.locator("table tbody tr")).to_have_count(1)


def test_a_slow_run_arrives_through_the_long_poll(
    app: Flask,
    page: Page,
    live_server: str,
    make_user,
    log_in: Callable,
    make_script: Callable,
    start_worker: Callable,
) -> None:
    app.config["RUN_WAIT_SECONDS"] = 1  # the run (~1.5 s) outlasts the POST's own wait
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(EDITOR, name="slow", source=SLOW)
    start_worker()
    log_in(page, EDITOR)
    url = open_script(page, live_server, script_id)

    page.get_by_label("Parameters (JSON object)").fill('{"slow": "yes"}')
    with page.expect_response(RUN_URL) as run, page.expect_response(POLL_URL) as poll:
        page.get_by_role("button", name="Run", exact=True).click()
    pending = run.value.text()
    assert re.search(r'data-status="(queued|running)"', pending), pending
    assert 'hx-trigger="load"' in pending
    assert poll.value.status == 200

    result = page.locator("#run-result")
    expect(result.locator(".badge")).to_have_text("succeeded")
    expect(result.locator("pre.run-value")).to_have_text('{\n  "done": true,\n  "slow": "yes"\n}')
    expect(result.locator(".log-message")).to_have_text("working")
    expect(result.locator(".run-summary")).to_contain_text(re.compile(r"in 1\.\d\d s"))
    expect(result).not_to_have_attribute("hx-get", re.compile(".*"))  # polling stopped
    assert_same_page(page, url)
