"""Reading the audit log: the filters shared by /audit, GET /api/v1/audit and the CSV export,
always within the caller's tenant, and the export's rows read in batches."""

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_

from webapp.audit.log import ACTIONS
from webapp.extensions import db
from webapp.models import AuditEntry
from webapp.serializers import iso
from webapp.tenancy import scoped

EXPORT_BATCH = 500  # rows per SELECT while streaming the CSV: memory stays bounded by this
FAMILIES = tuple(sorted({a.split(".")[0] for a in ACTIONS if "." in a}))  # "script" means script.*
CSV_COLUMNS = (
    "id",
    "time",
    "actor_type",
    "actor",
    "token_id",
    "token_label",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "target_version",
    "address",
    "user_agent",
    "changes",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class FilterInvalid(ValueError):
    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class Filters:
    actor: str = ""  # an email, cli, system, or token:ID
    action: str = ""  # an action, or its family (script: every script.*)
    target: str = ""  # a target's id or label (a script's id or name, a secret's name …)
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    entry: int | None = None
    raw: tuple[tuple[str, str], ...] = ()  # as given, for links that keep them

    def args(self) -> dict[str, str]:
        return dict(self.raw)


def parse_filters(args: Mapping[str, Any]) -> Filters:
    """The query string's filters; FilterInvalid names each bad one."""
    given = {k: str(args.get(k, "")).strip() for k in ("actor", "action", "target", "since", "until", "entry")}
    errors: dict[str, str] = {}
    action = given["action"]
    if action and action not in ACTIONS and action not in FAMILIES:
        errors["action"] = f"must be one of {', '.join(ACTIONS)}, or a family: {', '.join(FAMILIES)}"
    since, until = (_time(given[k], k == "until", errors, k) for k in ("since", "until"))
    entry = None
    if given["entry"]:
        if not _is_number(given["entry"]) or len(given["entry"]) > 18:
            errors["entry"] = "must be an entry's id (a positive integer)"
        else:
            entry = int(given["entry"])
    for key in ("actor", "target"):
        if len(given[key]) > 254:
            errors[key] = "must be at most 254 characters"
    if errors:
        raise FilterInvalid(errors)
    raw = tuple((k, v) for k, v in given.items() if v)
    return Filters(given["actor"], action, given["target"], since, until, entry, raw)


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also says yes to "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def _time(text: str, end: bool, errors: dict[str, str], key: str) -> datetime | None:
    """A date (the whole day, UTC) or an ISO-8601 time (UTC unless it says otherwise)."""
    if not text:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: past year 9999, or before year 1 in UTC
        errors[key] = "must be a date (2026-12-07) or an ISO-8601 time (2026-12-07T14:00:00+00:00)"
        return None


def entries_stmt(filters: Filters) -> Select:
    """The tenant's entries matching `filters`, newest first."""
    stmt = scoped(AuditEntry)
    if filters.actor.startswith("token:") and _is_number(filters.actor[6:]):
        stmt = stmt.where(AuditEntry.actor_token_id == int(filters.actor[6:]))
    elif filters.actor:
        stmt = stmt.where(AuditEntry.actor_label == filters.actor.lower())
    if filters.action in FAMILIES:
        stmt = stmt.where(AuditEntry.action.like(f"{filters.action}.%"))
    elif filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.target:
        stmt = stmt.where(or_(AuditEntry.target_id == filters.target, AuditEntry.target_label == filters.target))
    if filters.since:
        stmt = stmt.where(AuditEntry.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditEntry.created_at < filters.until)
    if filters.entry is not None:
        stmt = stmt.where(AuditEntry.id == filters.entry)
    return stmt.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())


VERSION_ACTIONS = ("script.create", "script.update", "script.rollback")  # the changes that make versions


def version_entries(script_id: str, versions: list[int]) -> dict[int, AuditEntry]:
    """The entry of each of these versions of the tenant's script: who saved it, from where."""
    stmt = scoped(AuditEntry).where(
        AuditEntry.target_type == "script",
        AuditEntry.target_id == script_id,
        AuditEntry.action.in_(VERSION_ACTIONS),
        AuditEntry.target_version.in_(versions),
    )
    return {entry.target_version: entry for entry in db.session.scalars(stmt.order_by(AuditEntry.id))}


def in_batches(stmt: Select, size: int = EXPORT_BATCH) -> Iterator[list[AuditEntry]]:
    """`stmt`'s rows (newest first), a SELECT of `size` rows at a time, each after the last one
    seen (keyset): never all rows in memory, and no OFFSET that grows with the export."""
    after: tuple[datetime, int] | None = None
    while True:
        page = stmt if after is None else stmt.where(_before(*after))
        rows = list(db.session.scalars(page.limit(size)))
        if not rows:
            return
        yield rows
        for entry in rows:  # the session forgets the batch it has handed out
            db.session.expunge(entry)
        if len(rows) < size:
            return
        after = (rows[-1].created_at, rows[-1].id)


def _before(when: datetime, entry_id: int) -> ColumnElement[bool]:
    return or_(AuditEntry.created_at < when, and_(AuditEntry.created_at == when, AuditEntry.id < entry_id))


def safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading = + - @ (or tab, CR) gets a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_row(entry: AuditEntry) -> list[str]:
    values = (
        entry.id,
        iso(entry.created_at),
        entry.actor_type,
        entry.actor_label,
        entry.actor_token_id,
        entry.actor_token_label,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.target_label,
        entry.target_version,
        entry.address,
        entry.user_agent,
        json.dumps(entry.changes, sort_keys=True) if entry.changes else "",
    )
    return [safe_cell(v) for v in values]


def csv_chunks(stmt: Select) -> Iterator[str]:
    """The export as text: the header, then one chunk per batch of rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for rows in in_batches(stmt):
        writer.writerows(csv_row(entry) for entry in rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()
