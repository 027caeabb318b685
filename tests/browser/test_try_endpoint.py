"""The "Try it" panel of an endpoint script sends a real request and shows the answer; the
page's curl example works as printed."""

import os
import subprocess

from playwright.sync_api import Page, expect

HELLO = "function main(req) { return { body: `Hello ${req.params.name}` } }"


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
    expect(page.locator("#curl-example")).to_contain_text("/api/scripts/orders/ID")
    page.get_by_label("id", exact=True).fill("42")
    page.get_by_label("Query").fill("q=fast")
    page.get_by_label("JSON body").fill('{"qty": 3}')
    page.get_by_role("button", name="Send request").click()
    output = page.locator("#try-output")
    expect(output.locator(".try-status")).to_have_text("HTTP 201 CREATED")
    expect(output.locator(".try-headers")).to_contain_text("x-order: 42")
    expect(output.locator(".try-body")).to_have_text('{"id": "42", "qty": 3, "q": "fast"}')


def test_path_parameters_are_placeholders_to_fill(
    page: Page, live_server, make_user, make_token, log_in, make_script, start_worker
) -> None:
    """A `/hello/{name}` endpoint: Try it has a field for `name`, and the curl example has a
    placeholder for it that works when pasted into a shell (curl would glob a literal {name})."""
    start_worker()
    make_user("ed@acme.io", "acme", "editor")
    script_id = make_script(
        "ed@acme.io", name="hello", type="endpoint", endpoint_method="GET", endpoint_path="/hello/{name}", source=HELLO
    )
    log_in(page, "ed@acme.io")
    page.goto(f"{live_server}/scripts/{script_id}")

    # Try it: one field per path parameter, labelled with its name; the path is built from them.
    page.get_by_label("name", exact=True).fill("Ann")
    page.get_by_role("button", name="Send request").click()
    output = page.locator("#try-output")
    expect(output.locator(".try-status")).to_have_text("HTTP 200 OK")
    expect(output.locator(".try-body")).to_have_text("Hello Ann")

    # The curl example: the parameter is a marked placeholder, and the note says what it stands for.
    curl = page.locator("#curl-example")
    placeholder = curl.locator("var.placeholder")
    expect(placeholder).to_have_text("NAME")
    expect(page.locator("#curl-placeholders")).to_contain_text("Replace NAME with the value of {name}")
    command = curl.inner_text().strip()
    assert "{" not in command and command.endswith(f"{live_server}/api/scripts/hello/NAME"), command

    def run(shell_line: str) -> str:
        env = {**os.environ, "SCRIPT_RUNNER_TOKEN": make_token("ed@acme.io")}
        done = subprocess.run(
            ["sh", "-c", shell_line + " --silent --show-error --fail-with-body --max-time 20"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, (shell_line, done.stdout, done.stderr)
        return done.stdout

    assert run(command) == "Hello NAME"  # pasted as printed, it calls the route as shown
    assert run(command.replace("NAME", "Ann")) == "Hello Ann"  # with the placeholder filled in
