"""Listing queries shared by the UI and the REST API (always tenant-scoped)."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select

from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion
from webapp.tenancy import scoped

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


class BadPaging(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


MAX_PAGE = 1_000_000  # keeps the OFFSET well inside a 64-bit integer (larger ones were a 500)


def paging_args(args: Any) -> tuple[int, int]:
    out = []
    for name, default, ceiling in (("page", 1, MAX_PAGE), ("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)):
        raw = args.get(name, "")
        if raw in ("", None):
            out.append(default)
            continue
        if not (str(raw).isascii() and str(raw).isdigit()) or int(raw) < 1:  # isdigit() alone takes "²"
            raise BadPaging(name, "must be a positive integer")
        value = int(raw)
        if ceiling and value > ceiling:
            raise BadPaging(name, f"must be at most {ceiling}")
        out.append(value)
    return out[0], out[1]


def paginate(stmt: Select, page: int, per_page: int) -> Page:
    total = db.session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = list(db.session.scalars(stmt.limit(per_page).offset((page - 1) * per_page)))
    return Page(items, page, per_page, total)


def scripts_stmt(type_: str | None = None, status: str | None = None, search: str | None = None) -> Select:
    stmt = scoped(Script)
    if type_:
        stmt = stmt.where(Script.type == type_)
    if status:
        stmt = stmt.where(Script.status == status)
    if search:
        pattern = f"%{search.strip().lower()}%"
        stmt = stmt.where(or_(func.lower(Script.name).like(pattern), func.lower(Script.description).like(pattern)))
    return stmt.order_by(func.lower(Script.name))


def versions_stmt(script: Script) -> Select:
    return select(ScriptVersion).where(ScriptVersion.script_id == script.id).order_by(ScriptVersion.version.desc())


def executions_stmt(script: Script | None = None) -> Select:
    stmt = scoped(Execution)
    if script is not None:
        stmt = stmt.where(Execution.script_id == script.id)
    return stmt.order_by(Execution.queued_at.desc())
