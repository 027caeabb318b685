"""Tenant quotas (docs/architecture.md, Quotas): TENANT_MAX_SCRIPTS refuses a create with 422
naming it, even to parallel creates; TENANT_STORAGE_MB refuses a storage.set with a message,
after pruning the tenant's oldest executions, and keeps a tenant flooding its executions with
big logs within the quota at the cost of its own oldest runs only; admins see the figures."""

import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
import requests

from tests.conftest import SOURCE, bearer
from webapp import quotas
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, StorageItem, Tenant, TenantUsage, utcnow

MAX_SCRIPTS = 3
MIB = 1024 * 1024


@pytest.fixture
def settings(settings):
    """Small quotas for this module (the worker gets the same through its environment)."""
    return replace(settings, tenants=replace(settings.tenants, max_scripts=MAX_SCRIPTS, storage_mb=1))


@pytest.fixture
def other(make_user, make_token) -> dict[str, str]:
    make_user("eve@globex.io", "globex", "admin")
    return bearer(make_token("eve@globex.io", tenant="globex"))


def _create(client, headers: dict, name: str):
    return client.post("/api/v1/scripts", json={"name": name, "type": "manual", "source": SOURCE}, headers=headers)


# -- TENANT_MAX_SCRIPTS ---------------------------------------------------------------------


def test_a_script_past_the_quota_answers_422_naming_it(client, admin, other):
    ids = [_create(client, admin, f"s{n}").get_json()["id"] for n in range(MAX_SCRIPTS)]
    refused = _create(client, admin, "one-too-many")
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"] == (
        f"this tenant has {MAX_SCRIPTS} scripts, as many as its quota allows (TENANT_MAX_SCRIPTS = {MAX_SCRIPTS}): "
        "delete a script to create another"
    )
    assert error["fields"] == {}
    assert error["quota"] == {"name": "TENANT_MAX_SCRIPTS", "limit": MAX_SCRIPTS, "used": MAX_SCRIPTS}
    assert _create(client, other, "globex-own").status_code == 201  # the quota is per tenant
    assert client.delete(f"/api/v1/scripts/{ids[0]}", headers=admin).status_code == 204
    assert _create(client, admin, "one-too-many").status_code == 201


def test_parallel_creates_never_pass_the_script_quota(live_server, admin):
    """Twelve creates at once through a threaded server: exactly the quota's worth succeed."""
    barrier = threading.Barrier(12)
    answers: list[int] = []

    def create(n: int) -> None:
        body = {"name": f"p{n}", "type": "manual", "source": SOURCE}
        barrier.wait(timeout=10)
        answers.append(requests.post(f"{live_server}/api/v1/scripts", json=body, headers=admin, timeout=30).status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [201] * MAX_SCRIPTS + [422] * (12 - MAX_SCRIPTS)
    listed = requests.get(f"{live_server}/api/v1/scripts", headers=admin, timeout=10).json()
    assert listed["total"] == MAX_SCRIPTS


def test_the_new_script_form_shows_the_quota_message(client, make_user, login):
    make_user("ed@acme.io", "acme", "editor")
    csrf = login("ed@acme.io")
    form = {"csrf_token": csrf, "type": "manual", "source": SOURCE, "status": "active"}
    for n in range(MAX_SCRIPTS):
        assert client.post("/scripts/new", data={**form, "name": f"s{n}"}).status_code == 303
    page = client.post("/scripts/new", data={**form, "name": "one-too-many"})
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert f"as many as its quota allows (TENANT_MAX_SCRIPTS = {MAX_SCRIPTS})" in html
    assert 'id="quota-error"' in html and "Please correct" not in html
    assert 'value="one-too-many"' in html  # what was typed is kept


# -- TENANT_STORAGE_MB: with a real worker --------------------------------------------------

LOG_200_KIB = """
async function main() {
  console.log('x'.repeat(200 * 1024));
  return 'logged';
}
"""
FILL_STORAGE = """
async function main() {
  const value = 'v'.repeat(250 * 1024);
  let written = 0;
  for (let n = 0; n < 8; n++) {
    try { await storage.set('big-' + n, value); written++; }
    catch (e) { return { written, error: e.message }; }
  }
  return { written, error: null };
}
"""


def _execution(client, headers: dict, execution_id: str):
    return client.get(f"/api/v1/executions/{execution_id}", headers=headers)


def test_storage_set_past_the_quota_is_refused_after_the_oldest_executions_go(
    client, admin, other, start_worker, run_script
):
    start_worker(TENANT_STORAGE_MB="1")
    theirs = run_script(other, LOG_200_KIB)  # globex's: older than any of acme's, and kept
    first = run_script(admin, LOG_200_KIB)
    logged = [first, run_script.again(admin, first["script_id"])]
    assert all(run["status"] == "succeeded" for run in logged)

    filled = run_script(admin, FILL_STORAGE)
    assert filled["status"] == "succeeded", filled
    # Four values of 250 KiB fit in 1 MiB once acme's logged runs are pruned; the fifth does not.
    assert filled["result"]["written"] == 4
    assert filled["result"]["error"] == (
        "storage.set: the tenant's storage quota of 1 MB (TENANT_STORAGE_MB) is full: storage values take "
        "1000.0 KB and this write needs 250.0 KB more; delete keys or store less"
    )
    for run in logged:
        assert _execution(client, admin, run["id"]).status_code == 404  # pruned to make room
    assert _execution(client, other, theirs["id"]).get_json()["logs"][0]["message"] == "x" * 200 * 1024

    # With values filling the quota, a run keeps a note instead of its logs and result.
    noisy = run_script.again(admin, first["script_id"])
    assert noisy["status"] == "succeeded"
    assert noisy["result"] is None
    assert [line["message"] for line in noisy["logs"]] == [
        "params, logs and result not kept: the tenant's storage quota of 1 MB (TENANT_STORAGE_MB) is full of "
        "storage values"
    ]
    usage = client.get("/api/v1/usage", headers=admin).get_json()["storage"]
    assert usage["used_bytes"] <= MIB
    assert usage["values_bytes"] == 4 * (len("big-0") + 250 * 1024 + 2)  # keys and JSON strings


def test_a_tenant_flooding_executions_loses_its_own_oldest_runs_only(client, admin, other, start_worker, run_script):
    start_worker(TENANT_STORAGE_MB="1")
    theirs = [run_script(other, LOG_200_KIB) for _ in range(2)]  # older than acme's flood
    flood = [run_script(admin, LOG_200_KIB)]
    flood += [run_script.again(admin, flood[0]["script_id"]) for _ in range(8)]  # 1.8 MiB of logs in all
    assert all(run["status"] == "succeeded" and run["result"] == "logged" for run in flood)

    kept = [run for run in flood if _execution(client, admin, run["id"]).status_code == 200]
    gone = [run for run in flood if run not in kept]
    assert gone and kept, "some of the flood must go, the newest must stay"
    assert flood[: len(gone)] == gone, "the oldest go first"
    assert flood[-1] in kept
    for run in theirs:
        assert _execution(client, other, run["id"]).status_code == 200
    usage = client.get("/api/v1/usage", headers=admin).get_json()["storage"]
    assert usage["used_bytes"] <= MIB
    assert usage["executions_kept"] == len(kept)
    assert usage["executions_bytes"] == sum(_stored(client, run["id"]) for run in kept)


def _stored(client, execution_id: str) -> int:
    with client.application.app_context():
        return db.session.get(Execution, uuid.UUID(execution_id)).stored_bytes


def test_values_past_their_ttl_make_room_and_deletes_give_bytes_back(app):
    """storage.set through the worker's host API, in-process: the counter follows each write."""
    from worker.host_api import HostApi

    def call(host: HostApi, op: str, **arg) -> dict:
        answer = host([{"id": 1, "op": op, "arg": arg}])[0]
        db.session.commit()
        return answer

    with app.app_context():
        tenant_id = _script("acme").tenant_id
        host = HostApi(tenant_id)
        big = '"' + "b" * (900 * 1024) + '"'
        db.session.add(
            StorageItem(tenant_id=tenant_id, key="old", value=big, expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        value = '"' + "v" * (200 * 1024) + '"'
        assert call(host, "storage.set", key="new", value=value)["ok"]  # the expired 900 KiB went first
        assert db.session.get(StorageItem, (tenant_id, "old")) is None
        assert quotas.current(tenant_id).storage_bytes == 3 + len(value)
        assert call(host, "storage.set", key="new", value=value.replace("v", "w"))["ok"]  # same size
        assert quotas.current(tenant_id).storage_bytes == 3 + len(value)
        assert call(host, "storage.delete", key="new")["value"] == "true"
        assert quotas.current(tenant_id).storage_bytes == 0


def test_endpoint_call_records_count_and_prune_like_runs(app, redis_url):
    """Endpoint calls are recorded in batches by the worker's RecordWriter: counted alike."""
    from redis import Redis

    from webapp.endpoints.calls import RecordWriter, execution_row

    with app.app_context():
        script = _script("acme")
        tenant_id, script_id = script.tenant_id, str(script.id)
    writer = RecordWriter(app, Redis.from_url(redis_url))
    logs = [{"time": "2026-12-07T10:00:00.000Z", "level": "log", "message": "x" * (200 * 1024)}]
    ids = []
    try:
        for n in range(6):
            call = {
                "id": str(uuid.uuid4()),
                "tenant_id": tenant_id,
                "script_id": script_id,
                "script_version": 1,
                "user_id": None,
                "queued_at": (utcnow() - timedelta(minutes=10 - n)).isoformat(),
                "summary": {"method": "GET", "path": "/x", "request_bytes": 0},
            }
            ids.append(uuid.UUID(call["id"]))
            writer.write_now(
                execution_row(call, 200, {"response_bytes": 2}, status="succeeded", logs=logs, finished_at=utcnow())
            )
    finally:
        writer.close()
    with app.app_context():
        left = list(db.session.scalars(db.select(Execution.id).order_by(Execution.queued_at)))
        assert left == ids[1:]  # five fit in 1 MiB; the sixth pushed the oldest out
        assert quotas.current(tenant_id).execution_bytes == sum(db.session.scalars(db.select(Execution.stored_bytes)))
        assert quotas.current(tenant_id).total <= MIB


# -- upkeep ---------------------------------------------------------------------------------


def _script(tenant_name: str) -> Script:
    tenant = db.session.scalar(db.select(Tenant).where(Tenant.name == tenant_name)) or Tenant(name=tenant_name)
    script = Script(tenant=tenant, name="s", type="manual", source=SOURCE, version=1)
    script.versions.append(ScriptVersion(version=1, type="manual", source=SOURCE, timezone="UTC"))
    db.session.add(script)
    db.session.commit()
    return script


def _runs(script: Script, sizes_kib: list[int], hours_ago: int = 0) -> list[uuid.UUID]:
    """Finished runs written directly, oldest first, each keeping `size` KiB."""
    ids = []
    for age, size in enumerate(reversed(sizes_kib)):
        execution = Execution(
            id=uuid.uuid4(),
            tenant_id=script.tenant_id,
            script_id=script.id,
            script_version=1,
            trigger="manual",
            status="succeeded",
            queued_at=utcnow() - timedelta(hours=hours_ago, minutes=age + 1),
            stored_bytes=size * 1024,
        )
        db.session.add(execution)
        ids.insert(0, execution.id)
    db.session.commit()
    return ids


def test_upkeep_recounts_usage_and_prunes_the_oldest_runs_of_a_tenant_past_its_quota(app):
    with app.app_context():
        acme, globex = _script("acme"), _script("globex")
        acme_runs = _runs(acme, [300, 300, 300, 300])  # 1200 KiB: past the 1 MiB quota
        globex_runs = _runs(globex, [300, 300, 300], hours_ago=5)  # 900 KiB, older: within the target
        db.session.add(StorageItem(tenant_id=acme.tenant_id, key="k", value="v" * 1000))
        db.session.commit()
        assert quotas.current(acme.tenant_id).total == 1200 * 1024 + 1001  # counted from stored sizes

        freed = quotas.enforce_storage_quotas()

        left = set(db.session.scalars(db.select(Execution.id)))
        assert left == set(acme_runs[1:]) | set(globex_runs)  # acme's oldest only
        assert freed == 300 * 1024
        acme_usage = db.session.get(TenantUsage, acme.tenant_id)
        assert (acme_usage.storage_bytes, acme_usage.execution_bytes) == (1001, 900 * 1024)
        globex_usage = db.session.get(TenantUsage, globex.tenant_id)
        assert (globex_usage.storage_bytes, globex_usage.execution_bytes) == (0, 900 * 1024)


def test_deleting_a_script_gives_its_executions_bytes_back(client, admin):
    script_id = _create(client, admin, "s").get_json()["id"]
    with client.application.app_context():
        script = db.session.get(Script, uuid.UUID(script_id))
        _runs(script, [100, 100])
        quotas.recount(script.tenant_id)
        db.session.commit()
    assert client.get("/api/v1/usage", headers=admin).get_json()["storage"]["executions_bytes"] == 200 * 1024
    assert client.delete(f"/api/v1/scripts/{script_id}", headers=admin).status_code == 204
    assert client.get("/api/v1/usage", headers=admin).get_json()["storage"]["executions_bytes"] == 0


# -- what admins see ------------------------------------------------------------------------


def test_admins_see_usage_with_a_warning_near_the_quota(app, client, make_user, login, admin):
    for n in range(MAX_SCRIPTS):
        assert _create(client, admin, f"s{n}").status_code == 201
    with app.app_context():
        tenant = db.session.scalar(db.select(Tenant).where(Tenant.name == "acme"))
        script = db.session.scalar(db.select(Script).where(Script.name == "s0"))
        _runs(script, [300])
        db.session.add(StorageItem(tenant_id=tenant.id, key="cache", value="c" * (600 * 1024 - 5)))
        db.session.commit()
        quotas.recount(tenant.id)
        db.session.commit()
    login("boss@acme.io")
    html = client.get("/usage").get_data(as_text=True)
    assert "<strong>3</strong> of 3" in html
    assert "<strong>900.0 KB</strong> of 1.0 MB" in html
    assert '<td id="values-bytes">600.0 KB</td>' in html
    assert '<td id="executions-bytes">300.0 KB</td>' in html
    assert "Kept executions (1)" in html
    assert "Scripts: 3 of 3, the quota (TENANT_MAX_SCRIPTS). Creating another is refused" in html
    assert "Storage: 900.0 KB of the 1.0 MB quota (TENANT_STORAGE_MB)." in html
    dashboard = client.get("/").get_data(as_text=True)
    assert "Scripts: 3 of 3, the quota (TENANT_MAX_SCRIPTS)." in dashboard and 'href="/usage"' in dashboard
    assert client.get("/api/v1/usage", headers=admin).get_json() == {
        "scripts": {"used": 3, "quota": 3},
        "storage": {
            "quota_bytes": MIB,
            "used_bytes": 900 * 1024,
            "values_bytes": 600 * 1024,
            "executions_bytes": 300 * 1024,
            "executions_kept": 1,
        },
        "warnings": [
            "Scripts: 3 of 3, the quota (TENANT_MAX_SCRIPTS). Creating another is refused until one is deleted.",
            "Storage: 900.0 KB of the 1.0 MB quota (TENANT_STORAGE_MB). The oldest executions are deleted to "
            "stay within it.",
        ],
    }


def test_editors_see_no_usage_link_nor_warning(client, make_user, login, admin):
    for n in range(MAX_SCRIPTS):
        _create(client, admin, f"s{n}")
    make_user("ed@acme.io", "acme", "editor")
    login("ed@acme.io")
    dashboard = client.get("/").get_data(as_text=True)
    assert 'href="/usage"' not in dashboard and "TENANT_MAX_SCRIPTS" not in dashboard
    assert client.get("/usage").status_code == 403
