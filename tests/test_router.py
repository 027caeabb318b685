"""The endpoint route table in-process: which script a method and path reach, with what
parameters, and what a miss answers (docs/endpoints.md). No worker, no HTTP server."""

import uuid

import pytest

from tests.conftest import SOURCE, bearer
from webapp.endpoints.router import EndpointRouter, Match
from webapp.extensions import db
from webapp.models import Script


@pytest.fixture
def token(make_user, make_token) -> str:
    make_user("ann@acme.test", "acme", "editor")
    return make_token("ann@acme.test", "acme")


@pytest.fixture
def save_endpoint(client, token):
    def save(path: str, method: str = "GET", name: str | None = None, headers: dict | None = None, **fields) -> dict:
        body = {"name": name or f"{method} {path}", "type": "endpoint", "source": SOURCE, **fields}
        body.update(endpoint_path=path, endpoint_method=method)
        response = client.post("/api/v1/scripts", json=body, headers=headers or bearer(token))
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return save


class Router:
    """An EndpointRouter used as the web process uses it: inside an app context per call (an
    app context held across the test client's requests would share their `g`)."""

    def __init__(self, app):
        self.app, self.router = app, EndpointRouter()

    def load_endpoints(self) -> None:
        with self.app.app_context():
            self.router.load_endpoints()

    def resolve(self, tenant_id: int, method: str, path: str) -> Match:
        with self.app.app_context():
            return self.router.resolve(tenant_id, method, path)


@pytest.fixture
def router(app) -> Router:
    return Router(app)


@pytest.fixture
def tenant_of(app):
    def tenant(script: dict) -> int:
        with app.app_context():
            return db.session.get(Script, uuid.UUID(script["id"])).tenant_id

    return tenant


def test_a_path_parameter_is_passed_by_name(save_endpoint, router, tenant_of):
    script = save_endpoint("/orders/{order_id}/lines/{line}")
    router.load_endpoints()
    found = router.resolve(tenant_of(script), "GET", "/orders/42/lines/7")
    assert found.route.script.name == script["name"]
    assert found.params == {"order_id": "42", "line": "7"}


def test_a_literal_segment_wins_over_a_parameter_whatever_the_order_saved(save_endpoint, router, tenant_of):
    by_param = save_endpoint("/users/{name}")
    literal = save_endpoint("/users/me", name="me")
    router.load_endpoints()
    tenant = tenant_of(literal)
    assert router.resolve(tenant, "GET", "/users/me").route.script.name == "me"
    assert router.resolve(tenant, "GET", "/users/bob").route.script.name == by_param["name"]


def test_another_method_at_the_path_lists_what_is_allowed(save_endpoint, router, tenant_of):
    script = save_endpoint("/items", "POST")
    save_endpoint("/items", "PUT")
    router.load_endpoints()
    found = router.resolve(tenant_of(script), "GET", "/items")
    assert found.route is None
    assert found.allowed == ("POST", "PUT")


def test_slashes_do_not_matter_but_segment_counts_do(save_endpoint, router, tenant_of):
    script = save_endpoint("/a/b")
    router.load_endpoints()
    tenant = tenant_of(script)
    assert router.resolve(tenant, "GET", "a/b/").route is not None
    assert router.resolve(tenant, "GET", "/a/b/c").route is None
    assert router.resolve(tenant, "GET", "/a").allowed == ()


def test_each_tenant_sees_only_its_own_routes(save_endpoint, router, make_user, make_token, tenant_of):
    make_user("bob@globex.test", "globex", "editor")
    ours = save_endpoint("/hello")
    router.load_endpoints()
    other_tenant = tenant_of(ours) + 1
    theirs = save_endpoint("/hello", headers=bearer(make_token("bob@globex.test", "globex")), name="globex hello")
    assert tenant_of(theirs) == other_tenant
    router.load_endpoints()
    assert router.resolve(tenant_of(ours), "GET", "/hello").route.script.name == ours["name"]
    assert router.resolve(other_tenant, "GET", "/hello").route.script.name == "globex hello"
    assert router.resolve(other_tenant + 1, "GET", "/hello").route is None


def test_a_disabled_script_is_not_served(client, token, save_endpoint, router, tenant_of):
    script = save_endpoint("/toggle")
    router.load_endpoints()
    tenant = tenant_of(script)
    assert router.resolve(tenant, "GET", "/toggle").route is not None
    patched = client.patch(f"/api/v1/scripts/{script['id']}", json={"status": "disabled"}, headers=bearer(token))
    assert patched.status_code == 200
    router.load_endpoints()
    assert router.resolve(tenant, "GET", "/toggle").route is None


def test_a_miss_looks_again_in_the_database(save_endpoint, router, tenant_of):
    first = save_endpoint("/early")
    router.load_endpoints()
    late = save_endpoint("/late")  # saved after this table was loaded, with no announcement to it
    assert router.resolve(tenant_of(first), "GET", "/late").route.script.name == late["name"]
