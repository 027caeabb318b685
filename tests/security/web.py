"""Helpers for the web security suites: a tenant with one of everything, and real-looking
URLs for every rule of the app's URL map."""

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from flask import Flask
from rq.job import Job
from werkzeug.routing import Rule

from webapp.executions.drafts import EPHEMERAL_JOB
from webapp.extensions import db
from webapp.invitations import service as invitations
from webapp.models import ApiToken, Execution, Membership, Tenant, User, utcnow
from webapp.redis_client import get_redis
from webapp.scripts import service
from webapp.secret_store import service as secret_store
from worker.host_api import HostApi

SAFE = {"GET"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}
SOURCE = "async function main(event) {\n  return 1;\n}\n"
STORAGE_KEY = "reports/2026 Q1 ✓?&#"  # a storage key of acme, with what a path or query could mangle
KEY_RULES = {"storage.item", "storage.delete"}  # the key travels in the query string
SECRET_NAME = "API_KEY"


@dataclass
class World:
    """Ids of real objects in tenant acme, owned by owner@acme.io (admin)."""

    app: Flask
    tenant_id: int
    script_id: str
    execution_id: str
    membership_id: int  # a member to change or remove: never the caller
    token_id: int
    invitation_id: int  # a pending invitation of acme, to newcomer@example.com
    invitation_token: str  # its link's token
    draft_job_id: str  # an ephemeral draft of acme (a job stored, never queued)

    def fresh_script(self) -> str:
        """A new script, for a rule that deletes the one it names."""
        with self.app.app_context():
            tenant = db.session.get(Tenant, self.tenant_id)
            owner = db.session.scalar(db.select(User).where(User.email == "owner@acme.io"))
            data = {"name": f"doomed-{uuid.uuid4().hex[:8]}", "type": "manual", "source": SOURCE}
            return str(service.create_script(tenant, owner, data).id)

    def fresh_secret(self) -> str:
        """A new secret's name, for a rule that deletes the one it names."""
        name = f"DOOMED_{uuid.uuid4().hex[:8].upper()}"
        with self.app.app_context():
            secret_store.put(self.tenant_id, name, "doomed value", None)
        return name

    def url(self, rule: Rule, script_id: str | None = None, secret_name: str | None = None) -> str:
        values = {
            "script_id": script_id or self.script_id,
            "name": secret_name or SECRET_NAME,
            "execution_id": self.execution_id,
            "membership_id": self.membership_id,
            "token_id": self.token_id,
            "invitation_id": self.invitation_id,
            "token": self.invitation_token,
            "job_id": self.draft_job_id,
            "version": 1,
            "number": 1,
            "path": "hello",
            "filename": "css/app.css",
        }
        path = rule.rule
        for name in rule.arguments:
            path = re.sub(r"<(?:[a-z]+:)?" + name + ">", str(values[name]), path)
        assert "<" not in path, path
        return path + ("?key=" + quote(STORAGE_KEY, safe="") if rule.endpoint in KEY_RULES else "")


def make_world(app: Flask, make_user, make_token) -> World:
    make_user("owner@acme.io", "acme", "admin")
    make_user("victim@acme.io", "acme", "viewer")
    make_token("owner@acme.io")
    with app.app_context():
        tenant = db.session.scalar(db.select(Tenant).where(Tenant.name == "acme"))
        owner = db.session.scalar(db.select(User).where(User.email == "owner@acme.io"))
        script = service.create_script(tenant, owner, {"name": "job", "type": "manual", "source": SOURCE})
        execution = Execution(
            id=uuid.uuid4(),
            tenant_id=tenant.id,
            script_id=script.id,
            script_version=1,
            trigger="api",
            status="succeeded",
            params={},
            result=1,
            logs=[],
            queued_at=utcnow(),
        )
        db.session.add(execution)
        db.session.commit()
        HostApi(tenant.id)([{"id": 1, "op": "storage.set", "arg": {"key": STORAGE_KEY, "value": json.dumps([1])}}])
        secret_store.put(tenant.id, SECRET_NAME, "the world's secret value", owner.id)
        victim = db.session.scalar(db.select(Membership).join(User).where(User.email == "victim@acme.io"))
        invitation, invitation_token, _ = invitations.invite(tenant, owner, "newcomer@example.com", "editor")
        draft = Job.create(EPHEMERAL_JOB, args=({},), meta={"tenant_id": tenant.id}, connection=get_redis())
        draft.save()
        return World(
            app=app,
            tenant_id=tenant.id,
            script_id=str(script.id),
            execution_id=str(execution.id),
            membership_id=victim.id,
            token_id=db.session.scalar(db.select(ApiToken.id)),
            invitation_id=invitation.id,
            invitation_token=invitation_token,
            draft_job_id=draft.id,
        )


def destructive(rule: Rule) -> bool:
    return rule.endpoint in {
        "api.delete_script",
        "scripts.delete",
        "admin.remove_member",
        "admin.revoke_token",
        "admin.revoke_invitation",
        "storage.delete",
        "api.delete_secret",
        "secrets.delete",
    }


def rules(app: Flask) -> Iterator[tuple[Rule, str]]:
    """Every (rule, method) of the URL map; rules that delete what they name come last."""
    found = [(rule, method) for rule in app.url_map.iter_rules() for method in sorted(rule.methods - IGNORED_METHODS)]
    yield from sorted(found, key=lambda rm: (destructive(rm[0]), rm[0].rule, rm[1]))
