"""The script form in a real browser: htmx type switching, the live cron preview,
server-side validation, the CodeMirror editor, enable/disable, roles, phone width."""

import os
import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE
from tests.services import eventually
from webapp.extensions import db
from webapp.models import Execution, Script

EDITOR = "ed@acme.io"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "edit-page.png"
EDITOR_SOURCE = 'async function main(event) { return { greeting: "typed in CodeMirror" }; }'
FIVE_MINUTES = "*/5 * * * *"
BAD_MINUTE = "61 * * * *"
BAD_MINUTE_MESSAGE = "minute: 61 is out of range 0-59"


def choose_type(page: Page, label: str) -> None:
    """Pick a type and wait for htmx to swap in the matching #trigger-fields and to settle
    them (htmx wires the new fields' triggers as it settles, some 20 ms after the swap)."""
    with page.expect_response(re.compile(r"/scripts/trigger-fields$")) as swap:
        page.get_by_label("Type").select_option(label=label)
    assert swap.value.status == 200
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def expect_cron_fields(page: Page) -> None:
    expect(page.get_by_role("group", name="Schedule")).to_be_visible()
    expect(page.get_by_label("Cron expression")).to_be_visible()
    expect(page.get_by_label("Timezone")).to_have_value("UTC")
    expect(page.get_by_label("When fires were missed (scheduler down)")).to_be_visible()
    expect(page.locator("#cron-preview")).to_be_attached()
    expect(page.locator("#endpoint_path")).to_have_count(0)
    expect(page.locator("#endpoint_method")).to_have_count(0)


def expect_valid_preview(page: Page, words: str, zone: str = "UTC") -> None:
    preview = page.locator("#cron-preview")
    expect(preview).to_have_class(re.compile(r"\bvalid\b"))
    expect(preview.locator("p")).to_have_text(f"{words} ({zone} time)")
    expect(preview).to_contain_text("Next fires, in your local time:")
    expect(preview.locator("li time")).to_have_count(5)
    # localizeTimes() rewrote the ISO instants into readable local times
    for text in preview.locator("li time").all_inner_texts():
        assert not re.fullmatch(r"\d{4}-\d\d-\d\dT.*", text), text


def test_create_cron_script_through_the_form(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)

    page.goto(f"{live_server}/scripts")
    page.get_by_role("link", name="New script").click()
    page.wait_for_url(f"{live_server}/scripts/new")
    expect(page.get_by_role("heading", name="New script")).to_be_visible()
    # A manual script has no trigger fields.
    expect(page.locator("#trigger-fields")).to_be_attached()
    expect(page.locator("#trigger-fields fieldset")).to_have_count(0)

    # The source textarea became a CodeMirror editor with line numbers.
    editor = page.locator(".CodeMirror")
    expect(editor).to_be_visible()
    expect(editor.locator(".CodeMirror-gutters")).to_be_visible()
    expect(editor.locator(".CodeMirror-linenumber", has_text=re.compile(r"^1$"))).to_be_visible()
    expect(page.locator("textarea#source")).to_be_hidden()

    choose_type(page, "Cron")
    expect_cron_fields(page)

    choose_type(page, "Endpoint")
    expect(page.get_by_role("group", name="HTTP endpoint")).to_be_visible()
    expect(page.get_by_label("Method")).to_have_value("GET")
    expect(page.get_by_label("Path under /api/scripts")).to_be_visible()
    expect(page.locator("#cron_expression")).to_have_count(0)
    expect(page.locator("#cron-preview")).to_have_count(0)
    expect(page.locator("#timezone")).to_have_count(0)

    choose_type(page, "Cron")
    expect_cron_fields(page)

    # Live preview: htmx swaps in the partial of GET /scripts/cron-preview.
    cron_field = page.get_by_label("Cron expression")
    with page.expect_response(re.compile(r"/scripts/cron-preview\?")) as checked:
        cron_field.fill(FIVE_MINUTES)
    assert checked.value.status == 200
    expect_valid_preview(page, "Every 5 minutes")

    cron_field.fill(BAD_MINUTE)
    preview = page.locator("#cron-preview")
    expect(preview).to_have_class(re.compile(r"\binvalid\b"))
    expect(preview.locator("p")).to_have_text(BAD_MINUTE_MESSAGE)
    expect(preview.locator("li")).to_have_count(0)

    # Replace the source by typing into the editor (real key presses into CodeMirror).
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.type(EDITOR_SOURCE)
    expect(editor.locator(".CodeMirror-code")).to_contain_text("typed in CodeMirror")
    expect(editor.locator(".CodeMirror-linenumber", has_text=re.compile(r"^2$"))).to_have_count(0)

    # Submitting the bad expression: the server's message sits beside the cron field.
    page.get_by_label("Name").fill("Report sender")
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Create script").click()
    assert nav.value is not None and nav.value.status == 422
    expect(page.get_by_role("alert").first).to_have_text("Please correct the 1 field marked below.")
    error = page.locator("#cron_expression-error")
    expect(error).to_have_text(BAD_MINUTE_MESSAGE)
    cron_field = page.get_by_label("Cron expression")
    expect(cron_field).to_have_value(BAD_MINUTE)
    expect(cron_field).to_have_attribute("aria-invalid", "true")
    expect(cron_field).to_have_attribute("aria-describedby", "cron_expression-error")
    # The error is right under the cron input, inside the Schedule fieldset.
    assert page.locator("#cron_expression + #cron_expression-error").count() == 1
    # What was typed survives the round trip: name, type and the editor's source.
    expect(page.get_by_label("Name")).to_have_value("Report sender")
    expect(page.get_by_label("Type")).to_have_value("cron")
    expect(page.locator(".CodeMirror-code")).to_contain_text("typed in CodeMirror")

    # Fix it and submit: the script page shows the schedule.
    cron_field.fill(FIVE_MINUTES)
    expect_valid_preview(page, "Every 5 minutes")
    with page.expect_navigation():
        page.get_by_role("button", name="Create script").click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(live_server)}/scripts/[^/]+$"))
    expect(page.get_by_role("heading", name="Report sender")).to_be_visible()
    schedule = page.locator("dl.facts dt:text-is('Schedule') + dd")
    expect(schedule).to_contain_text(FIVE_MINUTES)
    expect(schedule).to_contain_text("(UTC)")
    expect(schedule).to_contain_text("Every 5 minutes")
    expect(page.locator("dl.facts dt:text-is('Upcoming fires') + dd li")).to_have_count(5)
    expect(page.locator("pre.source")).to_have_text(EDITOR_SOURCE)

    # Disable: htmx swaps #script-status in place, no navigation.
    url = page.url
    status = page.locator("#script-status")
    expect(status.locator(".badge")).to_have_text("active")
    with page.expect_response(re.compile(r"/scripts/[^/]+/status$")) as toggled:
        status.get_by_role("button", name="Disable").click()
    assert toggled.value.status == 200
    expect(status.locator(".badge")).to_have_text("disabled")
    expect(status.locator(".badge")).to_have_class(re.compile(r"\bdisabled\b"))
    expect(status.get_by_role("button", name="Enable")).to_be_visible()
    assert page.url == url
    page.reload()
    expect(page.locator("#script-status .badge")).to_have_text("disabled")


def _editor_text(page: Page) -> str:
    return page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.getValue()")


def _create(page: Page) -> None:
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Create script").click()
    assert nav.value is not None and nav.value.status == 200, nav.value and nav.value.status


def test_switching_to_endpoint_gives_a_starter_that_answers_200(
    page: Page, live_server: str, make_user, log_in: Callable, start_worker
) -> None:
    start_worker()
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/new")
    expect(page.locator(".CodeMirror-code")).to_contain_text("return { ok: true, event };")

    choose_type(page, "Endpoint")
    code = page.locator(".CodeMirror-code")
    expect(code).to_contain_text("req.params.name")
    expect(code).to_contain_text("return { status: 200, body: { hello: name } };")
    page.get_by_label("Name").fill("greeter")
    page.get_by_label("Path under /api/scripts").fill("/greet/{name}")
    _create(page)
    expect(page.get_by_role("heading", name="greeter")).to_be_visible()

    # The first call, as saved: 200 with the parameter read back (the manual starter gave 502).
    answer = page.request.get(f"{live_server}/api/scripts/greet/Ann")
    assert answer.status == 200, answer.text()
    assert answer.json() == {"hello": "Ann"}


def test_a_type_switch_keeps_an_edited_source(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/new")
    # Untouched, the starter follows the type, and back.
    choose_type(page, "Cron")
    expect(page.locator(".CodeMirror-code")).to_contain_text("event.scheduled_at")
    choose_type(page, "Manual")
    expect(page.locator(".CodeMirror-code")).to_contain_text("return { ok: true, event };")

    # One key typed into the editor: the source is the user's now, and no switch replaces it.
    page.locator(".CodeMirror-code").get_by_text("return { ok: true, event };").click()
    page.keyboard.press("End")
    page.keyboard.type(" // mine")
    expect(page.locator(".CodeMirror-code")).to_contain_text("// mine")
    edited = _editor_text(page)
    for label in ("Endpoint", "Cron", "Manual"):
        choose_type(page, label)
        expect(page.locator("#trigger-fields")).to_be_attached()
        assert _editor_text(page) == edited
    # What is submitted is what the editor shows.
    assert page.locator("textarea#source").input_value() == edited


def test_the_cron_starter_logs_its_scheduled_time(
    page: Page, app, live_server: str, make_user, log_in: Callable, start_worker, start_scheduler
) -> None:
    start_worker()
    start_scheduler()
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/new?type=cron")
    expect(page.get_by_label("Type")).to_have_value("cron")
    expect(page.locator(".CodeMirror-code")).to_contain_text("event.scheduled_at")
    page.get_by_label("Name").fill("ticker")
    page.get_by_label("Cron expression").fill("*/1 * * * * *")
    _create(page)

    def first_fire() -> Execution | None:
        with app.app_context():
            fire = db.session.scalar(
                db.select(Execution)
                .join(Script, Script.id == Execution.script_id)
                .where(Script.name == "ticker", Execution.status == "succeeded")
                .order_by(Execution.scheduled_at)
            )
            if fire is not None:
                db.session.expunge(fire)
            return fire

    fire = eventually(first_fire, 10, "a succeeded fire of the cron starter")
    page.goto(f"{live_server}/executions/{fire.id}")
    logs = page.locator("ol.logs .log-message")
    expect(logs).to_have_count(1)
    expect(logs.first).to_contain_text(f"scheduled for {fire.scheduled_at.isoformat()} fired at ")


def test_edit_page_shows_preview_for_saved_schedule(
    page: Page, live_server: str, make_user, make_script, log_in: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(EDITOR, name="Nightly", type="cron", cron_expression="0 2 * * *", timezone="Europe/Berlin")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/{script_id}/edit")
    expect(page.get_by_role("heading", name="Edit Nightly")).to_be_visible()
    expect(page.get_by_label("Cron expression")).to_have_value("0 2 * * *")
    expect(page.get_by_label("Timezone")).to_have_value("Europe/Berlin")
    expect_valid_preview(page, "At 02:00 AM", "Europe/Berlin")
    expect(page.locator(".CodeMirror-code")).to_contain_text("return 1;")
    # Another timezone: the preview follows it (02:00 in Tokyo is 17:00 UTC).
    with page.expect_response(re.compile(r"/scripts/cron-preview\?.*timezone=Asia%2FTokyo")):
        page.get_by_label("Timezone").fill("Asia/Tokyo")
    expect_valid_preview(page, "At 02:00 AM", "Asia/Tokyo")
    expect(page.locator("#cron-preview li time").first).to_have_attribute("datetime", re.compile(r"T17:00:00\+00:00$"))
    # Typing in the expression right after the timezone: leaving the timezone field asks once
    # more (its change), and what is typed next still reaches the preview.
    page.get_by_label("Cron expression").fill("61 * * * *")
    expect(page.locator("#cron-preview")).to_have_text("minute: 61 is out of range 0-59")
    page.get_by_label("Timezone").fill("Europe/Berlin")
    page.get_by_label("Cron expression").fill("0 9 * * MON-FRI")
    expect_valid_preview(page, "At 09:00 AM, Monday through Friday", "Europe/Berlin")


def test_viewer_cannot_create_scripts(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    make_user("vi@acme.io", "acme", "viewer")
    log_in(page, "vi@acme.io")
    page.goto(f"{live_server}/scripts")
    expect(page.get_by_role("heading", name="Scripts", exact=True)).to_be_visible()
    expect(page.locator(".tenant-name")).to_have_text("acme · viewer")
    expect(page.get_by_role("link", name="New script")).to_have_count(0)
    expect(page.get_by_role("link", name="Create one")).to_have_count(0)

    response = page.goto(f"{live_server}/scripts/new")
    assert response is not None and response.status == 403


def _no_horizontal_scroll(page: Page) -> None:
    sizes = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " body: document.body.scrollWidth})"
    )
    assert sizes["inner"] == PHONE["width"]
    assert sizes["scroll"] <= sizes["inner"] + 1, f"{page.url} scrolls sideways: {sizes}"


def test_scripts_list_fits_a_phone(phone_page: Page, live_server: str, make_user, make_script, log_in) -> None:
    page = phone_page
    make_user(EDITOR, "acme", "editor")
    make_script(EDITOR, name="Backfill", description="Run by hand")
    make_script(
        EDITOR,
        name="Weekly invoice reminder",
        description="Sends every customer with an overdue invoice a friendly reminder e-mail with a payment link.",
        type="cron",
        cron_expression="30 8 * * MON-FRI",
        timezone="America/Los_Angeles",
    )
    make_script(
        EDITOR, name="Order webhook", type="endpoint", endpoint_path="/orders/{id}/events", endpoint_method="POST"
    )
    log_in(page, EDITOR)

    page.goto(f"{live_server}/scripts")
    expect(page.get_by_role("link", name="Order webhook")).to_be_visible()
    expect(page.get_by_role("link", name="New script")).to_be_visible()
    # The phone layout drops the Version and Updated columns.
    expect(page.get_by_role("columnheader", name="Updated")).to_be_hidden()
    _no_horizontal_scroll(page)


def test_script_form_fits_a_phone(phone_page: Page, live_server: str, make_user, log_in) -> None:
    page = phone_page
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)

    page.goto(f"{live_server}/scripts/new")
    expect(page.locator(".CodeMirror")).to_be_visible()
    _no_horizontal_scroll(page)
    choose_type(page, "Cron")
    page.get_by_label("Cron expression").fill(FIVE_MINUTES)
    expect_valid_preview(page, "Every 5 minutes")
    _no_horizontal_scroll(page)
    choose_type(page, "Endpoint")
    expect(page.get_by_label("Path under /api/scripts")).to_be_visible()
    _no_horizontal_scroll(page)


def test_screenshot_edit_page(page: Page, live_server: str, make_user, make_script, log_in: Callable, tmp_path) -> None:
    """The README's picture of the edit page; SCREENSHOTS=1 writes it into docs/screenshots/."""
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(
        EDITOR,
        name="Nightly report",
        description="Counts the reports sent during office hours.",
        type="cron",
        cron_expression="*/15 9-17 * * MON-FRI",
        timezone="Europe/Berlin",
        source=(
            "async function main(event) {\n"
            "  const seen = (await storage.get('reports-sent')) ?? 0;\n"
            "  console.log(`report ${seen + 1} for ${event.scheduled_at}`);\n"
            "  await storage.set('reports-sent', seen + 1);\n"
            "  return { sent: seen + 1 };\n"
            "}\n"
        ),
    )
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/{script_id}/edit")
    preview = page.locator("#cron-preview")
    expect(preview).to_have_class(re.compile(r"\bvalid\b"))
    expect(preview.locator("li time")).to_have_count(5)
    target = SCREENSHOT if os.environ.get("SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 10_000


def test_editor_by_keyboard(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    """Tab reaches the editor, which says what it is and shows a focus ring; Tab leaves it
    again; Ctrl+] and Ctrl+[ (the documented keys) indent and outdent."""
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/new")
    wrapper = page.locator(".CodeMirror")
    expect(wrapper).to_be_visible()
    ring = "el => getComputedStyle(el).outlineStyle + ' ' + getComputedStyle(el).outlineWidth"
    assert wrapper.evaluate(ring).startswith("none")

    page.get_by_label("Description").focus()
    page.keyboard.press("Tab")
    editor = page.get_by_role("textbox", name="Source", exact=True)
    expect(editor).to_be_focused()
    expect(editor).to_have_accessible_description(re.compile(r"Ctrl\+\] indents the selected lines"))
    style, width = wrapper.evaluate(ring).split()
    assert style != "none" and float(width.removesuffix("px")) >= 2, (style, width)
    expect(page.get_by_text("indents the selected lines")).to_be_visible()

    page.keyboard.press("Control+A")
    page.keyboard.type("return 1;")
    page.keyboard.press("Control+BracketRight")
    expect(page.locator("#source")).to_have_value("  return 1;")
    page.keyboard.press("Control+BracketLeft")
    expect(page.locator("#source")).to_have_value("return 1;")

    page.keyboard.press("Tab")
    expect(page.locator("summary", has_text="Limits")).to_be_focused()
    expect(page.locator("#source")).to_have_value("return 1;")  # no tab typed into the source
    assert wrapper.evaluate(ring).startswith("none")
    page.keyboard.press("Shift+Tab")
    expect(editor).to_be_focused()

    # Clicking the visible label focuses the editor too.
    page.get_by_label("Description").focus()
    page.get_by_text("Source", exact=True).click()
    expect(editor).to_be_focused()
