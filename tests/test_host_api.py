"""The host API in-process: what `storage` and `utils.hash` answer a script, scoped to its
tenant, and the message a refused call rejects with (docs/scripting.md). No worker, no sandbox."""

import json
from collections.abc import Callable

import pytest

from webapp.extensions import db
from webapp.models import Tenant
from worker import host_api
from worker.host_api import HostApi


@pytest.fixture
def tenants(app) -> tuple[int, int]:
    with app.app_context():
        acme, globex = Tenant(name="acme"), Tenant(name="globex")
        db.session.add_all([acme, globex])
        db.session.commit()
        return acme.id, globex.id


@pytest.fixture
def call(app) -> Callable[..., object]:
    """call(api, op, **arg) -> the JSON value answered, or ("error", message)."""

    def do(api: HostApi, op: str, **arg: object) -> object:
        with app.app_context():
            [answer] = api([{"id": 1, "op": op, "arg": arg}])
        return json.loads(answer["value"]) if answer["ok"] else ("error", answer["error"])

    return do


def test_storage_round_trip_and_listing_by_prefix(tenants, call):
    api = HostApi(tenants[0])
    assert call(api, "storage.get", key="missing") is None
    for key, value in {"user:1": {"n": 1}, "user:2": [2], "other": "x"}.items():
        assert call(api, "storage.set", key=key, value=json.dumps(value)) is None
    assert call(api, "storage.get", key="user:1") == {"n": 1}
    assert call(api, "storage.list", prefix="user:") == ["user:1", "user:2"]
    assert call(api, "storage.delete", key="user:1") is True
    assert call(api, "storage.delete", key="user:1") is False
    assert call(api, "storage.list") == ["other", "user:2"]


def test_a_tenant_never_sees_or_changes_another_tenants_keys(tenants, call):
    acme, globex = HostApi(tenants[0]), HostApi(tenants[1])
    call(acme, "storage.set", key="secret", value='"acme only"')
    assert call(globex, "storage.get", key="secret") is None
    assert call(globex, "storage.list") == []
    assert call(globex, "storage.delete", key="secret") is False
    call(globex, "storage.set", key="secret", value='"globex"')
    assert call(acme, "storage.get", key="secret") == "acme only"


def test_refusals_name_the_call_and_what_is_wrong(tenants, call):
    api = HostApi(tenants[0])
    assert call(api, "storage.get", key="") == ("error", "storage.get: key must be a non-empty string")
    assert call(api, "storage.set", key="k" * 201, value="1") == (
        "error",
        "storage.set: key is longer than 200 characters",
    )
    big = json.dumps("x" * (300 * 1024))
    assert call(api, "storage.set", key="big", value=big) == (
        "error",
        "storage.set: value is 300 KiB, over the 256 KiB limit",
    )
    assert call(api, "storage.set", key="t", value="1", ttl=-1)[1].startswith("storage.set: ttlSeconds must be")
    assert call(api, "storage.list", prefix=3) == ("error", "storage.list: prefix must be a string")
    assert call(api, "net.open") == ("error", "unknown host call 'net.open'")


def test_a_value_past_its_ttl_is_gone(tenants, call, app):
    api = HostApi(tenants[0])
    call(api, "storage.set", key="short", value="1", ttl=0.001)
    call(api, "storage.set", key="kept", value="2", ttl=3600)
    assert call(api, "storage.get", key="short") is None
    assert call(api, "storage.list") == ["kept"]
    with app.app_context():
        assert host_api.prune_expired_storage() == 1


def test_utils_hash_gives_the_hex_digest(tenants, call):
    api = HostApi(tenants[0])
    assert call(api, "utils.hash", text="abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert call(api, "utils.hash", text="abc", algorithm="md5") == "900150983cd24fb0d6963f7d28e17f72"
    assert call(api, "utils.hash", text="abc", algorithm="crc32") == (
        "error",
        "utils.hash: algorithm must be one of sha256, sha512, sha1, md5",
    )


def test_the_host_counts_a_runs_calls_itself(tenants, call, monkeypatch):
    monkeypatch.setattr(host_api, "MAX_CALLS_PER_RUN", 3)
    api = HostApi(tenants[0])
    answers = [call(api, "utils.hash", text=str(i)) for i in range(4)]
    assert answers[-1] == ("error", "host call limit 3 reached in this run")
    assert all(isinstance(a, str) for a in answers[:3])
