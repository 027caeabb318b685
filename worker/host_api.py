"""Host calls made by scripts, answered by the worker: tenant-scoped `storage` and `secrets`,
`utils.hash`, and `fetch`.

Each call arrives as {id, op, arg} from the sandbox; the answer is {id, ok, value} with the
value as JSON text, or {id, ok: false, error} with a message the script sees as an Error.
Every call but `fetch` is answered in the batch that brought it; a fetch is answered in a
later batch, once it has ended (worker/fetch/run.py).
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from webapp import quotas
from webapp.config import FetchSettings
from webapp.extensions import db
from webapp.models import StorageItem, Tenant, utcnow
from webapp.secret_store import service as secret_store
from webapp.secret_store.keys import SecretUnreadable
from webapp.storage import service as storage
from worker.fetch.guard import Policy
from worker.fetch.run import RunFetches, channel_bytes

MAX_KEY_CHARS = 200
MAX_VALUE_BYTES = 256 * 1024
MAX_KEYS_PER_TENANT = 10_000
MAX_LISTED_KEYS = 1000
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
MAX_ANSWER_BYTES_PER_RUN = 16 * 1024 * 1024  # what storage may hand one run in all
READ_AT_FIRST_FETCH = object()  # HostApi's allowed_hosts when its caller did not have them
MAX_CALLS_PER_RUN = 10_000  # as bootstrap.js counts them: enforced here too, outside the engine
HASHES = ("sha256", "sha512", "sha1", "md5")


class HostError(Exception):
    """A refused call; the message is what the script's rejected Promise carries."""


class HostApi:
    def __init__(
        self,
        tenant_id: int,
        fetch: FetchSettings | None = None,
        deadline: float = 0.0,
        allowed_hosts: Sequence[str] | object | None = READ_AT_FIRST_FETCH,
    ):
        self.tenant_id = tenant_id
        self.allowed_hosts = allowed_hosts  # the tenant's fetch allowlist, as its run began
        self.answered_bytes = 0
        self.calls = 0
        self.secrets_read: dict[str, str] = {}  # name -> value: what the run's record is redacted of
        self.fetch_settings = fetch
        self.deadline = deadline  # time.monotonic(): the run's wall limit, which bounds every fetch
        self.fetches: RunFetches | None = None  # made at the run's first fetch
        self.earlier_calls: list[dict[str, Any]] = []  # fetches of the run's starts before this one

    def __call__(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers to `calls`, and to fetches made earlier that have ended since. With nothing
        else to answer, it waits for a fetch in flight to end: the script waits on nothing else."""
        answers = self._answer(calls)
        if self.fetches is not None:
            answers += self.fetches.answers(block=not answers, used=sum(channel_bytes(a) for a in answers))
        return answers

    def close(self) -> None:
        """The run ended: fetches still in flight are cut off."""
        if self.fetches is not None:
            self.fetches.close()

    def start_over(self) -> None:
        """The run starts again from the top, in a fresh sandbox process (another run's limit
        ended the one it was in): its budgets start afresh, and what its earlier start still
        has in flight is cut off, its answers never handed to the new start (whose call ids
        begin again at 1). Its fetches stay in its record."""
        self.calls = self.answered_bytes = 0
        if self.fetches is not None:
            self.fetches.close()
            self.earlier_calls += self.fetches.calls
            self.fetches = None

    @property
    def http_calls(self) -> list[dict[str, Any]] | None:
        calls = self.earlier_calls + (self.fetches.calls if self.fetches is not None else [])
        return calls or None

    def _answer(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answers = []
        for call in calls:
            op = call.get("op")
            handler = _HANDLERS.get(op)
            self.calls += 1
            try:
                if self.calls > MAX_CALLS_PER_RUN:
                    raise HostError(f"host call limit {MAX_CALLS_PER_RUN} reached in this run")
                if op == "fetch":
                    answer = self._fetches().start(call["id"], call.get("arg") or {})
                    if answer is not None:
                        answers.append(answer)
                    continue
                if op == "fetch.abort":
                    if self.fetches is not None:
                        self.fetches.cancel((call.get("arg") or {}).get("call"))
                    answers.append({"id": call["id"], "ok": True, "value": "null"})
                    continue
                if handler is None:
                    raise HostError(f"unknown host call {op!r}")
                if self.answered_bytes > MAX_ANSWER_BYTES_PER_RUN:
                    raise HostError(f"host answers passed {MAX_ANSWER_BYTES_PER_RUN // 1024 // 1024} MiB in this run")
                value = handler(self, call.get("arg") or {})
                self.answered_bytes += len(value)
                answers.append({"id": call["id"], "ok": True, "value": value})
                db.session.commit()
            except HostError as exc:
                db.session.rollback()
                answers.append({"id": call["id"], "ok": False, "error": str(exc)})
            except (UnicodeError, ValueError, DBAPIError) as exc:  # e.g. lone surrogates, NUL in text
                db.session.rollback()
                message = f"{call.get('op')}: the argument cannot be stored or processed ({type(exc).__name__})"
                answers.append({"id": call["id"], "ok": False, "error": message})
        return answers

    # -- fetch ----------------------------------------------------------------------------
    def _fetches(self) -> RunFetches:
        if self.fetches is None:
            if self.fetch_settings is None:
                raise HostError("fetch is not available here")
            hosts = self.allowed_hosts
            if hosts is READ_AT_FIRST_FETCH:  # runs that never fetch never pay for it
                hosts = db.session.scalar(select(Tenant.fetch_allowed_hosts).where(Tenant.id == self.tenant_id))
                db.session.commit()
            settings = self.fetch_settings
            policy = Policy(
                allowed_networks=settings.allowed_networks,
                blocked_hosts=settings.blocked_hosts,
                tenant_hosts=tuple(hosts) if hosts is not None else None,
            )
            self.fetches = RunFetches(settings, policy, self.deadline, owner=str(self.tenant_id))
        return self.fetches

    # -- storage --------------------------------------------------------------------------
    def _live(self):
        return storage.live(self.tenant_id)

    def storage_get(self, arg: dict) -> str:
        key = _key(arg, "get")
        value = db.session.scalar(select(StorageItem.value).where(self._live(), StorageItem.key == key))
        return value if value is not None else "null"

    def storage_set(self, arg: dict) -> str:
        try:
            return self._set(arg)
        except quotas.QuotaExceeded as exc:
            refused = exc
            db.session.rollback()
        if quotas.drop_expired_values(self.tenant_id):  # values past their TTL go first
            try:
                return self._set(arg)
            except quotas.QuotaExceeded as exc:
                refused = exc
        raise HostError(f"storage.set: {refused.message}")

    def _set(self, arg: dict) -> str:
        key = _key(arg, "set")
        value = arg.get("value")
        if not isinstance(value, str):
            raise HostError("storage.set: value must be JSON-serializable")
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            raise HostError(f"storage.set: value is {size // 1024} KiB, over the {MAX_VALUE_BYTES // 1024} KiB limit")
        ttl = arg.get("ttl")
        if ttl is not None and (not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_SECONDS):
            raise HostError(f"storage.set: ttlSeconds must be between 0 and {MAX_TTL_SECONDS}")
        live = storage.not_expired().label("live")
        old = db.session.execute(
            select(StorageItem.size_bytes, live).where(StorageItem.tenant_id == self.tenant_id, StorageItem.key == key)
        ).first()
        if old is None or not old.live:
            count = db.session.scalar(select(func.count()).select_from(StorageItem).where(self._live())) or 0
            if count >= MAX_KEYS_PER_TENANT:
                raise HostError(f"storage.set: the tenant already holds {MAX_KEYS_PER_TENANT} keys")
        now = utcnow()
        row = {
            "tenant_id": self.tenant_id,
            "key": key,
            "value": value,
            "expires_at": now + timedelta(seconds=ttl) if ttl else None,
            "updated_at": now,
            "size_bytes": len(key.encode()) + size,
        }
        insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(StorageItem).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "key"],
            set_={
                "value": stmt.excluded.value,
                "expires_at": stmt.excluded.expires_at,
                "updated_at": now,
                "size_bytes": stmt.excluded.size_bytes,
            },
        )
        db.session.execute(stmt)
        growth = row["size_bytes"] - (old.size_bytes if old else 0)
        if growth:  # a same-size overwrite (a counter, a flag) costs the quota nothing
            usage = quotas.add(self.tenant_id, storage=growth, written=True)
            quotas.room_for_storage(self.tenant_id, usage, growth)
        return "null"

    def storage_delete(self, arg: dict) -> str:
        freed = storage.delete_item(self.tenant_id, _key(arg, "delete"))
        return "true" if freed is not None else "false"

    def storage_list(self, arg: dict) -> str:
        prefix = arg.get("prefix") or ""
        if not isinstance(prefix, str):
            raise HostError("storage.list: prefix must be a string")
        stmt = select(StorageItem.key).where(self._live()).order_by(StorageItem.key).limit(MAX_LISTED_KEYS)
        if prefix:
            stmt = stmt.where(storage.key_starts_with(prefix))
        return json.dumps(list(db.session.scalars(stmt)))

    # -- secrets --------------------------------------------------------------------------
    def secrets_get(self, arg: dict) -> str:
        name = arg.get("name")
        if not isinstance(name, str) or not secret_store.NAME.match(name):
            return "null"  # no secret can have that name
        if name not in self.secrets_read:
            try:
                value = secret_store.read_for_run(self.tenant_id, name)
            except SecretUnreadable:
                raise HostError(
                    f"secrets.get: secret {name} cannot be decrypted with the keys in SECRETS_KEY "
                    "(ask the operator: docs/secrets.md, rotation)"
                ) from None
            if value is None:
                return "null"
            self.secrets_read[name] = value
        return json.dumps(self.secrets_read[name])

    # -- utils ----------------------------------------------------------------------------
    def utils_hash(self, arg: dict) -> str:
        algorithm = arg.get("algorithm") or "sha256"
        if algorithm not in HASHES:
            raise HostError(f"utils.hash: algorithm must be one of {', '.join(HASHES)}")
        text = arg.get("text")
        if not isinstance(text, str):
            raise HostError("utils.hash: text must be a string")
        digest = hashlib.new(algorithm, text.encode(), usedforsecurity=False).hexdigest()
        return json.dumps(digest)


def _key(arg: dict, fn: str) -> str:
    key = arg.get("key")
    if not isinstance(key, str) or not key:
        raise HostError(f"storage.{fn}: key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise HostError(f"storage.{fn}: key is longer than {MAX_KEY_CHARS} characters")
    return key


def prune_expired_storage() -> int:
    result = db.session.execute(delete(StorageItem).where(StorageItem.expires_at <= utcnow()))
    db.session.commit()
    return result.rowcount or 0


_HANDLERS = {
    "storage.get": HostApi.storage_get,
    "storage.set": HostApi.storage_set,
    "storage.delete": HostApi.storage_delete,
    "storage.list": HostApi.storage_list,
    "secrets.get": HostApi.secrets_get,
    "utils.hash": HostApi.utils_hash,
}
