from dataclasses import replace

from tests.services import free_port
from webapp.app import create_app


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"db": "ok", "redis": "ok"}


def test_healthz_names_redis_when_down(settings):
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = create_app(down).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["db"] == "ok"
    assert body["redis"].startswith("down")
