"""The "Try it" panel of an endpoint script sends a real request and shows the answer."""

from playwright.sync_api import Page, expect


def test_try_it_shows_status_headers_and_body(page: Page, live_server, make_user, log_in, make_script, start_worker):
    start_worker()
    make_user("ed@acme.io", "acme", "editor")
    script_id = make_script(
        "ed@acme.io",
        name="orders",
        type="endpoint",
        endpoint_method="POST",
        endpoint_path="/orders/{id}",
        source="function main(r) { return { status: 201, headers: { 'X-Order': r.params.id },"
        " body: { id: r.params.id, qty: r.json.qty, q: r.query.q } } }",
    )
    log_in(page, "ed@acme.io")
    page.goto(f"{live_server}/scripts/{script_id}")
    expect(page.locator("#curl-example")).to_contain_text("/api/scripts/orders/{id}")
    page.get_by_label("Path under /api/scripts").fill("/orders/42")
    page.get_by_label("Query").fill("q=fast")
    page.get_by_label("JSON body").fill('{"qty": 3}')
    page.get_by_role("button", name="Send request").click()
    output = page.locator("#try-output")
    expect(output.locator(".try-status")).to_have_text("HTTP 201 CREATED")
    expect(output.locator(".try-headers")).to_contain_text("x-order: 42")
    expect(output.locator(".try-body")).to_have_text('{"id": "42", "qty": 3, "q": "fast"}')
