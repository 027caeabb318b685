"""Run draft on the script form in a real browser: the editor's source runs unsaved and the outcome
appears in place; an error's line is marked in the editor; the new page's examples run too."""

import re
from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.test_dashboard import watch_console
from tests.browser.test_phone_width import _overflow
from webapp.extensions import db
from webapp.models import Execution, Script

EDITOR = "ed@acme.io"
SAVED = "async function main(event) {\n  return { saved: true };\n}\n"
TYPED = 'function main(event) { console.log("drafted for", event.who); return { draft: event.who }; }'
THROWS = """function main(event) {
  const items = event.items ?? [];
  console.log("items:", items.length);
  if (!items.length) throw new Error("no items to report");
  return items;
}
"""
MARKER = "window.__draftMarker"


def _open(page: Page, url: str) -> None:
    page.goto(url)
    page.evaluate(f"{MARKER} = 'set before the click'")  # gone if the page is reloaded


def _run_draft(page: Page) -> None:
    with page.expect_response(re.compile(r"/scripts/([0-9a-f-]{36}/)?draft$")) as response:
        page.get_by_role("button", name="Run draft").click()
    assert response.value.status == 200


def _replace_source(page: Page, text: str) -> None:
    """Real key presses into CodeMirror: everything selected, then typed over."""
    page.locator(".CodeMirror").click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.type(text)


def _marked_line(page: Page):
    return page.locator(".CodeMirror-code > div", has=page.locator(".draft-error-line")).locator(
        ".CodeMirror-linenumber"
    )


def test_run_draft_on_the_edit_page_shows_the_outcome_in_place_and_saves_nothing(
    app: Flask, page: Page, live_server: str, make_user, log_in: Callable, make_script: Callable, start_worker
) -> None:
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(EDITOR, name="drafted", source=SAVED)
    start_worker()
    log_in(page, EDITOR)
    url = f"{live_server}/scripts/{script_id}/edit"
    _open(page, url)

    _replace_source(page, TYPED)
    page.get_by_label("Sample parameters (JSON object)").fill('{"who": "Ann"}')
    _run_draft(page)
    result = page.locator("#run-result")
    expect(result.locator(".badge")).to_have_text("succeeded")
    expect(result.locator(".run-value")).to_contain_text('"draft": "Ann"')
    expect(result.locator(".logs")).to_contain_text("drafted for Ann")
    expect(result).to_contain_text("draft of v1")
    assert page.url == url and page.evaluate(MARKER) == "set before the click"  # no navigation
    with app.app_context():
        script = db.session.get(Script, script_id)
        assert script.version == 1 and script.source == SAVED  # nothing saved
        assert db.session.scalar(db.select(Execution.trigger).where(Execution.script_id == script_id)) == "draft"

    # A thrown error on line 4: the line is marked in the editor and scrolled into view.
    page.evaluate("src => document.querySelector('.CodeMirror').CodeMirror.setValue(src)", THROWS)
    page.get_by_label("Sample parameters (JSON object)").fill("{}")
    _run_draft(page)
    expect(result.locator(".badge")).to_have_text("failed")
    expect(result.locator(".error-message")).to_contain_text("Error: no items to report (line 4, column")
    expect(result.locator(".logs")).to_contain_text("items: 0")
    expect(_marked_line(page)).to_have_text("4")
    expect(_marked_line(page)).to_be_in_viewport()
    # The next edit clears the mark.
    page.locator(".CodeMirror-code > div").nth(0).click()
    page.keyboard.press("End")
    page.keyboard.type(" ")
    expect(page.locator(".draft-error-line")).to_have_count(0)

    # The execution page shows the source the draft ran.
    result.get_by_role("link", name="Execution details").click()
    expect(page.get_by_role("heading", name="Draft source")).to_be_visible()
    expect(page.locator(".draft-source")).to_contain_text("no items to report")


def test_the_draft_panel_fits_a_phone(
    phone_page: Page, live_server: str, make_user, log_in: Callable, make_script: Callable, start_worker
) -> None:
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(EDITOR, name="on a phone", source=SAVED)
    start_worker()
    log_in(phone_page, EDITOR)
    phone_page.goto(f"{live_server}/scripts/{script_id}/edit")
    long_log = 'function main() { console.log("' + "a-long-log-line-" * 30 + '"); return { k: "' + "v" * 300 + '" }; }'
    phone_page.evaluate("src => document.querySelector('.CodeMirror').CodeMirror.setValue(src)", long_log)
    _run_draft(phone_page)
    expect(phone_page.locator("#run-result .badge")).to_have_text("succeeded")
    assert _overflow(phone_page) is None


def test_an_example_runs_as_a_draft_before_it_is_saved(
    page: Page, live_server: str, make_user, log_in: Callable, start_worker
) -> None:
    make_user(EDITOR, "acme", "editor")
    start_worker()
    log_in(page, EDITOR)
    problems = watch_console(page)
    page.goto(f"{live_server}/scripts/new")
    page.get_by_role("link", name="JSON endpoint").click()
    page.wait_for_url(re.compile(r"/scripts/new\?example=json-endpoint$"))
    expect(page.get_by_label("Name", exact=True)).to_have_value("Greeting endpoint")
    expect(page.get_by_label("Path under /api/scripts")).to_have_value("/greet/{name}")
    expect(page.locator(".CodeMirror-code")).to_contain_text("req.query.lang")
    expect(page.get_by_label("Path parameter name")).to_have_value("Ann")
    page.evaluate(f"{MARKER} = 'set before the click'")
    page.get_by_label("Query string").fill("lang=fr")
    _run_draft(page)
    result = page.locator("#run-result")
    expect(result.locator(".badge")).to_have_text("succeeded")
    expect(result.locator(".run-value")).to_contain_text('"greeting": "Bonjour, Ann!"')
    expect(result.get_by_role("link", name="Execution details")).to_have_count(0)  # nothing recorded
    assert page.evaluate(MARKER) == "set before the click"

    # Typing a path with another parameter adds its sample field (an event of ours: no eval under the CSP).
    page.get_by_label("Path under /api/scripts").fill("/greet/{name}/{team}")
    expect(page.get_by_label("Path parameter team")).to_be_visible()
    expect(page.get_by_label("Path parameter name")).to_be_visible()

    # Switching the type swaps the sample fields: a cron draft needs none.
    with page.expect_response(re.compile(r"/scripts/draft-sample$")) as swap:
        page.get_by_label("Type").select_option(label="Cron")
    assert swap.value.status == 200
    expect(page.locator("#draft-sample")).to_contain_text("cron event fired now")
    assert problems == []
