"""A tenant's secrets: set, replace, delete, list, read for a run, and key rotation.

The one way every surface (REST, UI, CLI, the worker's host calls) touches the `secrets`
table. Values go in and, for a run only, come out; nothing here returns a value otherwise.
"""

import re
from dataclasses import dataclass, field

from sqlalchemy import Select, delete, select, update
from sqlalchemy.exc import IntegrityError

from webapp.audit.log import Target, record
from webapp.extensions import db
from webapp.models import Secret, utcnow
from webapp.secret_store.keys import SecretUnreadable, secret_keys

NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}\Z")
MAX_VALUE_BYTES = 16 * 1024
ROTATE_BATCH = 200


class SecretInvalid(Exception):
    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise SecretInvalid({"name": "must match [A-Z_][A-Z0-9_]{0,63} (capitals, digits, _; no digit first)"})
    return name


def check_value(value: object) -> str:
    if not isinstance(value, str):
        raise SecretInvalid({"value": "must be a string"})
    if "\x00" in value:
        raise SecretInvalid({"value": "must not contain NUL characters"})
    try:
        size = len(value.encode())
    except UnicodeError:
        raise SecretInvalid({"value": "must be valid UTF-8 text"}) from None
    if size > MAX_VALUE_BYTES:
        raise SecretInvalid({"value": f"is {size} bytes, over the {MAX_VALUE_BYTES // 1024} KiB limit"})
    return value


def secrets_stmt(tenant_id: int) -> Select:
    return select(Secret).where(Secret.tenant_id == tenant_id).order_by(Secret.name)


def find(tenant_id: int, name: str) -> Secret | None:
    return db.session.scalar(select(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name))


def put(tenant_id: int, name: str, value: str, user_id: int | None) -> bool:
    """Set or replace the secret; True when it is new. user_id None: the CLI."""
    check_name(name)
    keys = secret_keys()
    token = keys.encrypt(check_value(value))
    for _ in range(2):  # a concurrent create of the same name: the second try replaces it
        now, secret = utcnow(), find(tenant_id, name)
        created = secret is None
        if created:
            secret = Secret(tenant_id=tenant_id, name=name, created_at=now)
            db.session.add(secret)
        secret.token, secret.key_id, secret.updated_at, secret.updated_by_id = token, keys.first_id, now, user_id
        record(tenant_id, "secret.set", Target("secret", name, name), {"created": created})  # never the value
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            continue
        return created
    raise RuntimeError("the secret could not be saved")


def remove(tenant_id: int, name: str) -> bool:
    """Delete the secret; False when the tenant has none by that name."""
    deleted = db.session.execute(delete(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name)).rowcount
    if not deleted:
        db.session.rollback()
        return False
    record(tenant_id, "secret.delete", Target("secret", name, name))
    db.session.commit()
    return True


def read_for_run(tenant_id: int, name: str) -> str | None:
    """The value, decrypted for the run that asked (worker only); None when the tenant has no
    such secret. SecretUnreadable when no key of SECRETS_KEY opens it."""
    token = db.session.scalar(select(Secret.token).where(Secret.tenant_id == tenant_id, Secret.name == name))
    return None if token is None else secret_keys().decrypt(token)


@dataclass
class Rotation:
    rotated: int = 0
    current: int = 0  # already under the first key
    unreadable: list[tuple[int, str]] = field(default_factory=list)  # (tenant id, name): no key opens it


def rotate(batch: int = ROTATE_BATCH) -> Rotation:
    """Re-encrypt every value with the first key, a batch per transaction.

    Each row is rewritten only if its token is still the one read (a value replaced meanwhile
    is already under the first key), and every token stays readable by the key list at every
    moment: stopped anywhere, a re-run finishes the job. Unreadable values are left as they are.
    Every row rewritten or found current gets the first key's id (rows stored before key ids
    were kept get theirs here).
    """
    keys, report, after = secret_keys(), Rotation(), 0
    while True:
        rows = db.session.execute(
            select(Secret.id, Secret.tenant_id, Secret.name, Secret.token, Secret.key_id)
            .where(Secret.id > after)
            .order_by(Secret.id)
            .limit(batch)
        ).all()
        if not rows:
            return report
        for row in rows:
            if keys.current(row.token):
                report.current += 1
                token = row.token
                if row.key_id == keys.first_id:
                    continue
            else:
                try:
                    token = keys.rotate(row.token)
                except SecretUnreadable:
                    report.unreadable.append((row.tenant_id, row.name))
                    continue
                report.rotated += 1
            db.session.execute(
                update(Secret)
                .where(Secret.id == row.id, Secret.token == row.token)
                .values(token=token, key_id=keys.first_id)
            )
        db.session.commit()
        after = rows[-1].id
