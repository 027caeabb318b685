"""Per-tenant quotas (docs/architecture.md, Quotas): scripts (TENANT_MAX_SCRIPTS) and storage
(TENANT_STORAGE_MB: `storage` values plus what kept executions hold).

A tenant's storage usage is a counter (`tenant_usage`), changed in the same transaction as each
write that changes it, so reading it costs one row. The change is an UPDATE that returns the new
figure: it locks the row (PostgreSQL) or the database (SQLite) until commit, so each check sees
every write counted before it, and parallel writes cannot all slip under the quota. No two
writers wait on each other in a circle: a storage write locks its item, then the usage row; an
execution's outcome locks the usage row, then its own running row; making room deletes only
finished executions, which no writer holds. Upkeep recounts the counter from the stored sizes
(deletes by cascade and retention change usage without counting).
"""

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, delete, func, select, update

from webapp.executions.service import FINISHED, insert_ignoring_duplicates
from webapp.extensions import db
from webapp.models import Execution, Script, StorageItem, Tenant, TenantUsage, utcnow

MIB = 1024 * 1024
UPKEEP_TARGET = 0.9  # upkeep prunes a tenant's oldest executions down to this share of its quota
HEADROOM = 0.05  # a write that passes the quota prunes this share more, so the next ones need not
WARN_AT = 0.8  # admins are warned from this share of a quota
PRUNE_CHUNK = 500
_usage = TenantUsage.__table__
# Built once: a run's outcome and a storage.set pay only for executing it.
_ADD = (
    update(_usage)
    .where(_usage.c.tenant_id == bindparam("tenant"))
    .values(
        storage_bytes=_usage.c.storage_bytes + bindparam("storage"),
        execution_bytes=_usage.c.execution_bytes + bindparam("executions"),
    )
    .returning(_usage.c.storage_bytes, _usage.c.execution_bytes)
)


class QuotaExceeded(Exception):
    """A write refused by a quota; the message names it."""

    def __init__(self, name: str, limit: int, used: int, message: str):
        super().__init__(message)
        self.name, self.limit, self.used, self.message = name, limit, used, message


@dataclass(frozen=True)
class Usage:
    storage_bytes: int  # storage values (key and value)
    execution_bytes: int  # kept executions' params, logs, results and error messages

    @property
    def total(self) -> int:
        return self.storage_bytes + self.execution_bytes


def _tenant_limits() -> Any:
    return current_app.config["SETTINGS"].tenants


def storage_quota() -> int:
    """TENANT_STORAGE_MB in bytes; 0: no quota."""
    return max(_tenant_limits().storage_mb, 0) * MIB


def filesize(size: int) -> str:
    """Bytes for people: 812 bytes, 3.4 KB, 12.5 MB (binary units, as quotas count them)."""
    if size < 1024:
        return f"{size} bytes"
    if size < MIB:
        return f"{size / 1024:.1f} KB"
    return f"{size / MIB:.1f} MB"


# -- the counter ----------------------------------------------------------------------------


def add(tenant_id: int, storage: int = 0, executions: int = 0, written: bool = False) -> Usage:
    """Count bytes written (negative: freed) in this transaction, before the write or just
    after it (`written`), and return the usage after. Holds the tenant's row until the
    transaction ends."""
    delta = {"tenant": tenant_id, "storage": storage, "executions": executions}
    row = db.session.execute(_ADD, delta).first()
    if row is not None:
        return Usage(*row)
    # The tenant's first count (since it was made, or since upgrade): from the stored sizes,
    # which include a write already made in this transaction, not one made by another.
    counted = _counted(tenant_id)
    created = db.session.execute(
        insert_ignoring_duplicates(TenantUsage, ["tenant_id"])
        .values(tenant_id=tenant_id, **counted)
        .returning(TenantUsage.tenant_id)
    ).first()
    if created is not None and written:
        return Usage(counted["storage_bytes"], counted["execution_bytes"])
    row = db.session.execute(_ADD, delta).first()
    assert row is not None, f"no usage row for tenant {tenant_id}"
    return Usage(*row)


def _counted(tenant_id: int) -> dict[str, int]:
    storage = select(func.coalesce(func.sum(StorageItem.size_bytes), 0)).where(StorageItem.tenant_id == tenant_id)
    executions = select(func.coalesce(func.sum(Execution.stored_bytes), 0)).where(Execution.tenant_id == tenant_id)
    return {"storage_bytes": db.session.scalar(storage), "execution_bytes": db.session.scalar(executions)}


def recount(tenant_id: int) -> Usage:
    """Set the counter to the sum of stored sizes. The row is taken first, so a write counted
    concurrently is either committed and summed, or waits and counts itself after."""
    add(tenant_id)
    counted = _counted(tenant_id)
    db.session.execute(update(_usage).where(_usage.c.tenant_id == tenant_id).values(**counted))
    return Usage(counted["storage_bytes"], counted["execution_bytes"])


def current(tenant_id: int) -> Usage:
    """The tenant's usage for display: one row, no lock."""
    row = db.session.execute(
        select(_usage.c.storage_bytes, _usage.c.execution_bytes).where(_usage.c.tenant_id == tenant_id)
    ).first()
    if row is None:
        counted = _counted(tenant_id)
        return Usage(counted["storage_bytes"], counted["execution_bytes"])
    return Usage(*row)


# -- making room ----------------------------------------------------------------------------


def make_room(tenant_id: int, needed: int, extra: int = 0, keep: Iterable[Any] = ()) -> int:
    """Delete the tenant's oldest finished executions (but `keep`) until `needed` bytes are
    freed, then the next oldest of the same batch while they fit in `extra` bytes more. Returns
    the bytes freed, uncounted from the usage. The caller holds the tenant's row (`add`)."""
    keep = list(keep)
    freed, done = 0, False
    while not done:
        stmt = (
            select(Execution.id, Execution.stored_bytes)
            .where(Execution.tenant_id == tenant_id, Execution.status.in_(FINISHED))
            .order_by(Execution.queued_at, Execution.id)
            .limit(PRUNE_CHUNK)
        )
        if keep:
            stmt = stmt.where(Execution.id.not_in(keep))
        oldest = db.session.execute(stmt).all()
        if not oldest:
            break
        chosen = []
        for execution_id, size in oldest:
            if freed >= needed and freed + size > needed + extra:
                done = True
                break
            chosen.append(execution_id)
            freed += size
        db.session.execute(delete(Execution).where(Execution.id.in_(chosen)))
        done = done or freed >= needed  # the extra is taken from one batch at most
    if freed:
        add(tenant_id, executions=-freed, written=True)
    return freed


def room_for_storage(tenant_id: int, usage: Usage, growth: int) -> None:
    """After a `storage.set` grew the tenant's values by `growth` bytes (counted: `usage` is
    after it): prune its oldest executions to make room, or QuotaExceeded if values alone
    pass the quota (the caller rolls the write back)."""
    quota = storage_quota()
    if not quota or growth <= 0 or usage.total <= quota:
        return
    if usage.storage_bytes > quota:
        before = usage.storage_bytes - growth
        raise QuotaExceeded(
            "TENANT_STORAGE_MB",
            quota,
            before,
            f"the tenant's storage quota of {_tenant_limits().storage_mb} MB (TENANT_STORAGE_MB) is full: storage "
            f"values take {filesize(before)} and this write needs {filesize(growth)} more; delete keys or store less",
        )
    make_room(tenant_id, usage.total - quota, int(quota * HEADROOM))


def drop_expired_values(tenant_id: int) -> int:
    """Delete the tenant's values past their TTL now (upkeep would, within 10 minutes), in a
    transaction of its own; returns how many."""
    sizes = db.session.scalars(
        delete(StorageItem)
        .where(StorageItem.tenant_id == tenant_id, StorageItem.expires_at <= utcnow())
        .returning(StorageItem.size_bytes)
    ).all()
    if sizes:
        add(tenant_id, storage=-sum(sizes), written=True)
    db.session.commit()
    return len(sizes)


# -- executions' outcomes -------------------------------------------------------------------

_OUTCOME_COLUMNS = ("params", "logs", "result")


def outcome_size(row: dict[str, Any]) -> int:
    """Bytes the database keeps of a run's params, logs, result (JSON text, as SQLAlchemy
    writes it), error message and, for a draft, its source."""
    size = sum(len(json.dumps(row[c])) for c in _OUTCOME_COLUMNS if row.get(c) is not None)
    return size + sum(len(row[c].encode()) for c in ("error_message", "source") if row.get(c))


def count_outcomes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Execution rows (or the columns an update writes, with `id` and `tenant_id`) about to be
    written in this transaction, as they are to be written: with `stored_bytes`, counted for
    their tenants. A tenant past its quota has its oldest executions pruned to make room;
    where its storage values leave none, the rows keep a note instead of params, logs and result."""
    rows = [{**row, "stored_bytes": outcome_size(row)} for row in rows]
    by_tenant: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["stored_bytes"]:
            by_tenant[row["tenant_id"]].append(row)
    quota = storage_quota()
    for tenant_id in sorted(by_tenant):  # one order for every writer of several tenants
        mine = by_tenant[tenant_id]
        usage = add(tenant_id, executions=sum(row["stored_bytes"] for row in mine))
        if not quota or usage.total <= quota:
            continue
        over = usage.total - quota
        if make_room(tenant_id, over, int(quota * HEADROOM), keep=[row["id"] for row in mine]) < over:
            _keep_a_note_only(tenant_id, mine)
    return rows


def _keep_a_note_only(tenant_id: int, rows: list[dict[str, Any]]) -> None:
    note = (
        f"params, logs and result not kept: the tenant's storage quota of {_tenant_limits().storage_mb} MB "
        "(TENANT_STORAGE_MB) is full of storage values"
    )
    saved = 0
    for row in rows:
        logs = row.get("logs") or []
        row.update(
            params=None,
            result=None,
            logs=[{"time": logs[-1]["time"] if logs else utcnow().isoformat(), "level": "warn", "message": note}],
        )
        size = outcome_size(row)
        saved += row["stored_bytes"] - size
        row["stored_bytes"] = size
    add(tenant_id, executions=-saved)


# -- scripts --------------------------------------------------------------------------------


def reserve_script(tenant_id: int) -> None:
    """Before creating a script: QuotaExceeded at TENANT_MAX_SCRIPTS. Holds the tenant's row
    until the transaction ends, so parallel creates are counted one after the other."""
    limit = _tenant_limits().max_scripts
    if limit <= 0:
        return
    add(tenant_id)
    used = script_count(tenant_id)
    if used >= limit:
        raise QuotaExceeded(
            "TENANT_MAX_SCRIPTS",
            limit,
            used,
            f"this tenant has {used} scripts, as many as its quota allows (TENANT_MAX_SCRIPTS = {limit}): "
            "delete a script to create another",
        )


def script_count(tenant_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(Script).where(Script.tenant_id == tenant_id)) or 0


# -- what admins see ------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    scripts: int
    max_scripts: int  # 0: no quota
    usage: Usage
    storage_quota: int  # bytes; 0: no quota
    executions_kept: int | None = None

    @staticmethod
    def _share(used: int, limit: int) -> float | None:
        return used / limit if limit else None

    @property
    def scripts_share(self) -> float | None:
        return self._share(self.scripts, self.max_scripts)

    @property
    def storage_share(self) -> float | None:
        return self._share(self.usage.total, self.storage_quota)

    @property
    def warnings(self) -> list[str]:
        found = []
        if self.max_scripts and self.scripts >= self.max_scripts:
            found.append(
                f"Scripts: {self.scripts} of {self.max_scripts}, the quota (TENANT_MAX_SCRIPTS). "
                "Creating another is refused until one is deleted."
            )
        elif self.max_scripts and self.scripts >= self.max_scripts * WARN_AT:
            found.append(f"Scripts: {self.scripts} of {self.max_scripts}, near the quota (TENANT_MAX_SCRIPTS).")
        quota = self.storage_quota
        if quota and self.usage.storage_bytes >= quota * WARN_AT:
            found.append(
                f"Storage values take {filesize(self.usage.storage_bytes)} of the {filesize(quota)} quota "
                "(TENANT_STORAGE_MB). Once they fill it, storage.set is refused and runs keep no logs or results."
            )
        elif quota and self.usage.total >= quota * WARN_AT:
            found.append(
                f"Storage: {filesize(self.usage.total)} of the {filesize(quota)} quota (TENANT_STORAGE_MB). "
                "The oldest executions are deleted to stay within it."
            )
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "scripts": {"used": self.scripts, "quota": self.max_scripts or None},
            "storage": {
                "quota_bytes": self.storage_quota or None,
                "used_bytes": self.usage.total,
                "values_bytes": self.usage.storage_bytes,
                "executions_bytes": self.usage.execution_bytes,
                "executions_kept": self.executions_kept,
            },
            "warnings": self.warnings,
        }


def report(tenant_id: int, count_executions: bool = True) -> Report:
    kept = None
    if count_executions:
        kept = db.session.scalar(select(func.count()).select_from(Execution).where(Execution.tenant_id == tenant_id))
    return Report(
        scripts=script_count(tenant_id),
        max_scripts=max(_tenant_limits().max_scripts, 0),
        usage=current(tenant_id),
        storage_quota=storage_quota(),
        executions_kept=kept,
    )


# -- upkeep ---------------------------------------------------------------------------------


def enforce_storage_quotas() -> int:
    """Recount every tenant's usage; prune the oldest executions of those past UPKEEP_TARGET
    of their quota down to it. Returns the executions' bytes freed."""
    quota = storage_quota()
    freed = 0
    for tenant_id in list(db.session.scalars(select(Tenant.id).order_by(Tenant.id))):
        usage = recount(tenant_id)
        target = int(quota * UPKEEP_TARGET)
        if quota and usage.total > target:
            freed += make_room(tenant_id, usage.total - target)
        db.session.commit()
    return freed
