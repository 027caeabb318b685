"""At start, every key the stored secrets need must be in SECRETS_KEY (docs/secrets.md, "Keys").

A well-formed but wrong SECRETS_KEY, or none on a second host (a fresh key is then generated
into its instance/), would start fine and leave every stored value unreadable. So the
long-running processes (the web's gunicorn master, every ScriptWorker however rq starts it,
`python -m worker.scheduler`) refuse to start instead, naming the missing key's id, never a key.

One query: the distinct key ids of the secrets table with their counts. Rows stored before key
ids were kept (NULL) are checked by decrypting one of them. The CLI does not check: `db upgrade`
runs before the table has the column, and `secrets rotate-key` is how ids get fixed.
"""

import logging
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from webapp.config import Settings
from webapp.database import engine_options
from webapp.extensions import db
from webapp.secret_store.keys import SECRET_KEYS, SecretKeys, SecretsKeyError, SecretUnreadable

log = logging.getLogger(__name__)

KEYS_IN_USE = text(
    "SELECT key_id, COUNT(*) AS secrets, COUNT(DISTINCT tenant_id) AS tenants FROM secrets GROUP BY key_id"
)
ONE_WITHOUT_ID = text("SELECT token FROM secrets WHERE key_id IS NULL ORDER BY id LIMIT 1")

SUBJECT = {
    "env": "SECRETS_KEY",
    "instance": "SECRETS_KEY is unset, so this host's instance/secrets_key is used, and it",
    "generated": "SECRETS_KEY is unset and instance/secrets_key was generated on this host just now, so it",
}


def check_keys_in_use(engine: Engine, keys: SecretKeys, origin: str = "env") -> None:
    """SecretsKeyError when a stored secret's key is not among `keys`. A database without the
    table or column yet (before `db upgrade`), or not answering, is not checked (a warning)."""
    try:
        with engine.connect() as connection:
            missing = _missing(connection, keys)
    except DBAPIError as exc:
        log.warning("SECRETS_KEY was not checked against the stored secrets: %s", type(exc.orig).__name__)
        return
    if missing:
        lacks = "; ".join(_lack(group) for group in missing)
        raise SecretsKeyError(
            f'{SUBJECT[origin]} lacks {lacks}; set SECRETS_KEY to include it (docs/secrets.md, "Keys"). '
            f"The keys it has: {', '.join(keys.ids)}"
        )


def check_app_keys(app: Flask) -> None:
    """check_keys_in_use for a process that has built the app (worker, scheduler)."""
    with app.app_context():
        check_keys_in_use(db.engine, app.extensions[SECRET_KEYS], app.config["SETTINGS"].secrets_key_origin)


def check_settings_keys(settings: Settings) -> None:
    """check_keys_in_use without an app, for the gunicorn master (gunicorn.conf.py)."""
    engine = create_engine(settings.database_url, **engine_options(settings.database_url))
    try:
        check_keys_in_use(engine, SecretKeys(settings.secrets_key), settings.secrets_key_origin)
    finally:
        engine.dispose()


def _missing(connection: Connection, keys: SecretKeys) -> list[Any]:
    groups = connection.execute(KEYS_IN_USE).all()
    missing = [group for group in groups if group.key_id is not None and group.key_id not in keys.ids]
    unknown = [group for group in groups if group.key_id is None]
    if unknown:
        try:
            keys.decrypt(connection.execute(ONE_WITHOUT_ID).scalar_one())
        except SecretUnreadable:
            missing += unknown
    return missing


def _lack(group: Any) -> str:
    what = f"{_count(group.secrets, 'secret')} of {_count(group.tenants, 'tenant')}"
    if group.key_id is None:
        return f"the key that encrypted {what} stored before key ids were recorded (none of its keys opens them)"
    return f"the key {group.key_id} that encrypted {what}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
