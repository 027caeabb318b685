"""What the UI tells its user: a confirmation after each change to a script, a diff without
blank lines, the limits' errors by their labels, 403 and 404 pages that say what happened,
and endpoint calls shown as request and response."""

import json
from collections.abc import Callable

import requests
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import bearer
from tests.services import eventually
from webapp.extensions import db
from webapp.models import Execution, Script
from webapp.scripts import service

EDITOR = "ed@acme.io"
V1 = "async function main(event) {\n  const a = 1;\n  const b = 2;\n  return a + b;\n}\n"
V2 = "async function main(event) {\n  const a = 10;\n  const b = 2;\n  console.log(a);\n  return a + b;\n}\n"


def _set_source(page: Page, source: str) -> None:
    expect(page.locator(".CodeMirror")).to_be_visible()  # the editor has replaced the textarea
    page.evaluate("(source) => document.querySelector('.CodeMirror').CodeMirror.setValue(source)", source)


def _expect_confirmation(page: Page, text: str) -> None:
    """The message sits in the page's live region (role=status), which screen readers announce."""
    expect(page.get_by_role("status").filter(has=page.locator(".flash"))).to_have_text(text)


def test_each_change_to_a_script_is_confirmed(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)

    page.goto(f"{live_server}/scripts/new")
    page.get_by_label("Name").fill("billing")
    _set_source(page, V1)
    page.get_by_role("button", name="Create script").click()
    expect(page.get_by_role("heading", name="billing")).to_be_visible()
    _expect_confirmation(page, "Script “billing” created.")
    page.reload()  # shown once
    expect(page.locator(".flash")).to_have_count(0)

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Description").fill("Monthly invoices")
    page.get_by_role("button", name="Save changes").click()
    _expect_confirmation(page, "Saved; the version is unchanged.")

    page.get_by_role("link", name="Edit").click()
    _set_source(page, V2)
    page.get_by_role("button", name="Save changes").click()
    _expect_confirmation(page, "Saved: version 2.")

    page.get_by_role("link", name="Edit").click()
    page.get_by_role("button", name="Save changes").click()
    _expect_confirmation(page, "Nothing to save: no field changed.")

    page.goto(page.url.rstrip("/") + "/versions/1")
    page.get_by_role("button", name="Roll back to this version").click()
    _expect_confirmation(page, "Rolled back: version 3 has the source and settings of version 1.")

    # Disable is an htmx request: its confirmation goes into the live region already there.
    page.get_by_role("button", name="Disable").click()
    _expect_confirmation(page, "Script “billing” disabled.")
    page.get_by_role("button", name="Enable").click()
    _expect_confirmation(page, "Script “billing” enabled.")

    page.get_by_role("link", name="Delete…").click()
    page.get_by_label("Type the script's name to confirm").fill("billing")
    page.get_by_role("button", name="Delete script").click()
    expect(page.get_by_role("heading", name="Scripts", exact=True)).to_be_visible()
    _expect_confirmation(page, "Script “billing” deleted.")


def test_a_confirmation_is_readable_on_a_phone(phone_page: Page, live_server: str, make_user, log_in: Callable) -> None:
    page = phone_page
    name = "Reconciliation of every order that failed to sync with the warehouse overnight" + "x" * 20
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/new")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create script").click()
    _expect_confirmation(page, f"Script “{name}” created.")
    box = page.locator(".flash").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    sizes = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert sizes[0] <= sizes[1], f"the page scrolls sideways: {sizes}"


def test_the_diff_has_one_line_per_line(
    app: Flask, page: Page, live_server: str, make_user, make_script, log_in: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    script_id = make_script(EDITOR, name="sums", source=V1)
    with app.app_context():
        service.update_script(db.session.get(Script, script_id), None, {"source": V2})
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/{script_id}/versions/2")
    diff = page.locator("pre.diff")
    expect(diff).to_be_visible()
    assert diff.inner_text().split("\n") == [
        "--- version 1",
        "+++ version 2",
        "@@ -1,5 +1,6 @@",
        " async function main(event) {",
        "-  const a = 1;",
        "+  const a = 10;",
        "   const b = 2;",
        "+  console.log(a);",
        "   return a + b;",
        " }",
    ]
    # Each line is one line high: no blank line below a changed one.
    heights = diff.locator("span").evaluate_all("(spans) => spans.map((s) => s.getBoundingClientRect().height)")
    assert len(set(heights)) == 1, heights


def test_limits_errors_are_named_by_their_labels_beside_their_inputs(
    page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.goto(f"{live_server}/scripts/new")
    page.get_by_label("Name").fill("limited")
    page.get_by_text("Limits (optional").click()
    page.get_by_label("CPU time (s)").fill("0")
    page.get_by_label("Wall time (s)").fill("soon")
    page.get_by_label("Memory (MiB)").fill("65")
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Create script").click()
    assert nav.value is not None and nav.value.status == 422
    expect(page.locator("p.error")).to_have_text("Please correct the 3 fields marked below.")
    expected = {
        "CPU time (s)": "CPU time (s) must be greater than 0",
        "Wall time (s)": "Wall time (s) must be a number",
        "Memory (MiB)": "Memory (MiB) may not exceed the platform default of 64",
    }
    for label, message in expected.items():
        field = page.get_by_label(label)
        expect(field).to_have_attribute("aria-invalid", "true")
        error_id = field.get_attribute("aria-describedby")
        assert error_id
        error = page.locator(f"[id='{error_id}']")
        expect(error).to_have_text(message)
        # beside its own input: in the same box, just under it
        assert field.locator("xpath=..").locator(f"[id='{error_id}']").count() == 1
        expect(field).to_have_accessible_description(message)
    expect(page.locator(".field-error")).to_have_count(3)


def test_a_403_says_which_role_is_needed(page: Page, live_server: str, make_user, log_in: Callable) -> None:
    make_user("vi@acme.io", "acme", "viewer")
    make_user(EDITOR, "acme", "editor")
    log_in(page, "vi@acme.io")
    response = page.goto(f"{live_server}/scripts/new")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("main")).to_contain_text(
        "Only editors and admins of acme can create, edit, enable, disable or delete scripts; you are a viewer."
    )
    expect(page.get_by_role("link", name="All scripts")).to_be_visible()

    page.context.clear_cookies()
    log_in(page, EDITOR)
    page.goto(f"{live_server}/tokens")
    expect(page.locator("main")).to_contain_text("Only admins of acme can manage API tokens; you are an editor.")


def test_a_404_keeps_other_tenants_secret_and_offers_a_way_on(
    page: Page, live_server: str, make_user, make_script, log_in: Callable
) -> None:
    make_user("both@acme.io", "acme", "editor")
    make_user("both@acme.io", "globex", "editor")
    make_user(EDITOR, "acme", "editor")
    other_tenants = make_script("both@acme.io", "globex", name="theirs")
    log_in(page, "both@acme.io")
    page.get_by_role("button", name="acme").click()
    texts = []
    for path in (f"/scripts/{other_tenants}", "/scripts/00000000-0000-4000-8000-000000000000", "/no/such/page"):
        response = page.goto(live_server + path)
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        texts.append(page.locator("main").inner_text())
    # The same words whether the id is another tenant's, nobody's, or no page at all.
    assert len(set(texts)) == 1
    main = page.locator("main")
    expect(main).to_contain_text("This page does not exist, or what it shows is not in acme, your current tenant.")
    expect(page.locator("#switch-tenant-hint")).to_contain_text("switch to it with the tenant menu")
    page.get_by_role("link", name="All scripts").click()
    expect(page.get_by_role("heading", name="Scripts", exact=True)).to_be_visible()
    page.go_back()
    page.get_by_role("link", name="The dashboard").click()
    page.wait_for_url(f"{live_server}/")

    page.context.clear_cookies()
    log_in(page, EDITOR)  # one tenant: no hint to switch
    page.goto(f"{live_server}/scripts/{other_tenants}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("#switch-tenant-hint")).to_have_count(0)


def test_endpoint_calls_show_as_request_and_response(
    app: Flask, page: Page, live_server: str, make_user, make_token, make_script, log_in: Callable, start_worker
) -> None:
    start_worker()
    make_user(EDITOR, "acme", "editor")
    token = make_token(EDITOR, "acme")
    script_id = make_script(
        EDITOR,
        name="orders",
        type="endpoint",
        endpoint_method="POST",
        endpoint_path="/orders/{id}",
        source="function main(r) { return { status: 201, body: { id: r.params.id } } }",
    )
    answer = requests.post(
        f"{live_server}/api/scripts/orders/42?token=s3cret&page=2",
        data=json.dumps({"qty": 3}),
        headers={**bearer(token), "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 201 and answer.content == b'{"id": "42"}'

    def recorded() -> Execution | None:
        with app.app_context():
            return db.session.scalar(db.select(Execution).where(Execution.script_id == script_id))

    execution = eventually(recorded, timeout=10, what="the call recorded")
    log_in(page, EDITOR)

    for path in ("/executions", f"/scripts/{script_id}"):
        page.goto(live_server + path)
        expect(page.locator(".call-line")).to_have_text("POST /orders/42 → 201")
        expect(page.locator("main")).not_to_contain_text("null")

    page.goto(f"{live_server}/executions/{execution.id}")
    section = page.get_by_role("region", name="Request and response")
    facts = dict(zip(section.locator("dt").all_inner_texts(), section.locator("dd").all_inner_texts(), strict=True))
    assert facts == {
        "Request": "POST /orders/42",
        "Query parameters": "token, page (names only; values are not kept)",
        "Request body": "10 bytes (application/json)",
        "Response status": "201",
        "Response body": "12 bytes (application/json)",
    }
    expect(page.get_by_role("heading", name="Parameters")).to_have_count(0)
    expect(page.get_by_role("heading", name="Result")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("s3cret")
