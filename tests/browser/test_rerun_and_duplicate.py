"""Run again from an execution's page, and Duplicate a script, as an editor would in a browser."""

import re
from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.conftest import GREETER as GREET
from tests.test_rerun import _recorded
from webapp.extensions import db
from webapp.models import Script

EDITOR = "ed@acme.io"

EXECUTION_URL = re.compile(r"/executions/([0-9a-f-]{36})$")


def test_run_again_starts_a_new_run_with_the_same_params(page: Page, live_server: str, greeter: str) -> None:
    page.goto(f"{live_server}/scripts/{greeter}")
    page.get_by_label("Parameters (JSON object)").fill('{"name": "Ann"}')
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator("#run-result").get_by_role("link", name="Execution details").click()
    page.wait_for_url(EXECUTION_URL)
    first = EXECUTION_URL.search(page.url)[1]
    expect(page.locator("#rerun-hint")).to_contain_text("current version (v1)")

    page.get_by_role("button", name="Run again").click()
    page.wait_for_url(lambda url: EXECUTION_URL.search(url) is not None and first not in url)
    expect(page.locator(".flash")).to_have_text("Started greeter again (v1) with the same parameters.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Execution succeeded")  # the page follows the run
    params = page.get_by_role("region", name="Parameters")
    expect(params.locator("pre")).to_have_text('{\n  "name": "Ann"\n}')
    expect(page.get_by_role("region", name="Result").locator("pre")).to_have_text('{\n  "hi": "Ann"\n}')
    expect(page.locator(".facts")).to_contain_text(f"by {EDITOR}")


def test_endpoint_calls_and_disabled_scripts_say_why_they_cannot_run_again(
    app: Flask, page: Page, live_server: str, make_user, log_in: Callable, make_script: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    source = "async function main(req) {\n  return { status: 200, body: 'ok' };\n}\n"
    hook = make_script(
        EDITOR, name="hook", type="endpoint", endpoint_path="/hook", endpoint_method="GET", source=source
    )
    call = _recorded(app, str(hook), "endpoint")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/executions/{call}")
    expect(page.locator("#rerun-unavailable")).to_contain_text("stored only as a summary, so it cannot be replayed")
    expect(page.get_by_role("button", name="Run again")).to_have_count(0)

    manual = make_script(EDITOR, name="greeter", source=GREET, status="disabled")
    page.goto(f"{live_server}/executions/{_recorded(app, str(manual), params={'name': 'Ann'})}")
    expect(page.locator("#rerun-unavailable")).to_have_text("The script is disabled: enable it to run it again.")
    expect(page.get_by_role("button", name="Run again")).to_have_count(0)


def test_duplicate_opens_a_prefilled_form_and_creates_a_copy(
    app: Flask, page: Page, live_server: str, make_user, log_in: Callable, make_script: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    script_id = str(
        make_script(
            EDITOR,
            name="Nightly report",
            description="Mails the numbers",
            type="cron",
            cron_expression="0 3 * * *",
            timezone="Europe/Berlin",
            source=GREET,
        )
    )
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/{script_id}")
    page.get_by_role("link", name="Duplicate").click()
    expect(page.get_by_role("heading", name="New script")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value("Nightly report (copy)")
    expect(page.get_by_label("Description")).to_have_value("Mails the numbers")
    expect(page.get_by_label("Type")).to_have_value("cron")
    expect(page.get_by_label("Cron expression")).to_have_value("0 3 * * *")
    expect(page.get_by_label("Timezone")).to_have_value("Europe/Berlin")
    expect(page.locator(".CodeMirror-code")).to_contain_text("console.log('hello', event.name);")

    page.get_by_role("button", name="Create script").click()
    page.wait_for_url(lambda url: re.search(r"/scripts/[0-9a-f-]{36}$", url) is not None and script_id not in url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Nightly report (copy)")
    expect(page.locator("pre.source")).to_contain_text("console.log('hello', event.name);")
    page.goto(f"{live_server}/scripts/{script_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Nightly report")
    with app.app_context():
        scripts = {s.name: s for s in db.session.scalars(db.select(Script))}
        assert set(scripts) == {"Nightly report", "Nightly report (copy)"}
        original, copy = scripts["Nightly report"], scripts["Nightly report (copy)"]
        assert original.version == 1 and original.source == GREET and copy.source == GREET
        assert copy.cron_expression == "0 3 * * *" and copy.timezone == "Europe/Berlin"
