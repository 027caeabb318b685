"""EndpointRouter: which active endpoint script serves (tenant, method, path).

Each web process keeps the route table in memory, with what a call needs of each script, so a
call reads nothing from the database. A change made by any process sets a new random version
token in Redis; every call compares it (read once per call with the caller cache's version) and
reloads the table from the database when it differs, so route changes reach every process at
once. Should an announcement be lost (Redis away during the change), a fingerprint of the
endpoint scripts in the database, checked at most once a second, still brings the change in
within a second. A lookup that misses reloads the table too (at most once a second), so an
active script is never answered with 404.
"""

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from webapp.extensions import db
from webapp.models import Script
from webapp.redis_client import get_redis
from webapp.scripts.service import script_deleted, script_saved

log = logging.getLogger(__name__)
VERSION_KEY = "sr:routes:version"
MISS_RELOAD_SECONDS = 1.0
CHECK_DATABASE_SECONDS = 1.0


@dataclass(frozen=True)
class ServedScript:
    """What a call needs of its script (plain values: the table is shared by threads)."""

    id: uuid.UUID
    tenant_id: int
    name: str
    version: int
    wall_seconds: float | None  # the script's own limit, if it has one


@dataclass(frozen=True)
class Route:
    script: ServedScript
    method: str
    segments: tuple[str | None, ...]  # None where the path has a {parameter}
    names: tuple[str, ...]  # the parameter names, in order

    @property
    def script_id(self) -> uuid.UUID:
        return self.script.id

    @classmethod
    def of(cls, script: Script) -> "Route":
        segments, names = [], []
        for part in _split(script.endpoint_path or "/"):
            if part.startswith("{") and part.endswith("}"):
                segments.append(None)
                names.append(part[1:-1])
            else:
                segments.append(part)
        served = ServedScript(
            script.id, script.tenant_id, script.name, script.version, (script.limits or {}).get("wall_seconds")
        )
        return cls(served, script.endpoint_method or "GET", tuple(segments), tuple(names))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        values = []
        for want, got in zip(self.segments, parts, strict=True):
            if want is None:
                values.append(got)
            elif want != got:
                return None
        return dict(zip(self.names, values, strict=True))


@dataclass(frozen=True)
class Match:
    route: Route | None
    params: dict[str, str]
    allowed: tuple[str, ...]  # methods served at this path (for 405)


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p != ""]


class EndpointRouter:
    def __init__(self) -> None:
        self._routes: dict[int, list[Route]] = {}
        self._version: bytes | None = None
        self._loaded_at = 0.0
        self._last_miss_reload = 0.0
        self._fingerprint: tuple | None = None
        self._checked_database_at = 0.0
        self._lock = threading.RLock()  # held while the table is reloaded: one reload at a time

    # -- maintenance -------------------------------------------------------------------------
    def load_endpoints(self) -> None:
        with self._lock:
            fingerprint = _fingerprint()
            scripts = db.session.scalars(select(Script).where(Script.type == "endpoint", Script.status == "active"))
            table: dict[int, list[Route]] = {}
            for script in scripts:
                table.setdefault(script.tenant_id, []).append(Route.of(script))
            for routes in table.values():
                routes.sort(key=lambda r: [s is None for s in r.segments])  # literal segments win
            self._routes = table
            self._loaded_at = self._checked_database_at = time.monotonic()
            self._fingerprint = fingerprint

    def changed(self, redis: Redis | None = None) -> None:
        """An endpoint script was saved or deleted: reload this process's table and tell the others."""
        with self._lock:
            self.load_endpoints()
            self._bump(redis)

    def _bump(self, redis: Redis | None) -> None:
        if redis is None:
            return
        token = uuid.uuid4().hex.encode()  # not a counter: a Redis restart must not repeat a value
        try:
            redis.set(VERSION_KEY, token)
            self._version = token
        except RedisError:
            log.warning("route change not announced (Redis down); other processes see it within a second")

    # -- lookups -----------------------------------------------------------------------------
    def refresh_if_changed(self, version: bytes | None) -> None:
        """`version`: VERSION_KEY as read for this call (b"" when unset), None when Redis
        could not say."""
        if self._loaded_at and version is not None and version == self._version:
            if time.monotonic() - self._checked_database_at < CHECK_DATABASE_SECONDS:
                return
            self._checked_database_at = time.monotonic()
            try:
                if _fingerprint() == self._fingerprint:
                    return
            except (OperationalError, InterfaceError):  # unreachable: no route can change meanwhile
                db.session.rollback()
                log.warning("route table not checked against the database (unavailable); serving it as announced")
                return
            log.info("endpoint scripts changed without (or before) an announcement: reloading routes")
            self.load_endpoints()
            return
        if version is None and time.monotonic() - self._loaded_at < MISS_RELOAD_SECONDS:
            return
        with self._lock:
            if version is not None and version == self._version:
                return  # another thread reloaded for this version meanwhile
            self.load_endpoints()
            self._version = version

    def resolve(self, tenant_id: int, method: str, path: str) -> Match:
        found = self._find(tenant_id, method, path)
        if found.route is None and time.monotonic() - self._last_miss_reload >= MISS_RELOAD_SECONDS:
            # A miss may be a change we have not heard of: look again in the database.
            self._last_miss_reload = time.monotonic()
            self.load_endpoints()
            found = self._find(tenant_id, method, path)
        return found

    def _find(self, tenant_id: int, method: str, path: str) -> Match:
        parts = _split(path)
        allowed: list[str] = []
        best: tuple[Route, dict[str, str]] | None = None
        for route in self._routes.get(tenant_id, []):
            params = route.match(parts)
            if params is None:
                continue
            if route.method not in allowed:
                allowed.append(route.method)
            if route.method == method and (best is None or _more_literal(route, best[0])):
                best = (route, params)
        if best is None:
            return Match(None, {}, tuple(sorted(allowed)))
        return Match(best[0], best[1], tuple(sorted(allowed)))


def _fingerprint() -> tuple:
    """Changes with any change to an endpoint script (each sets updated_at), or to their number."""
    endpoints = select(func.count(), func.max(Script.updated_at), func.sum(Script.version)).where(
        Script.type == "endpoint"
    )
    return tuple(db.session.execute(endpoints).one())


def _more_literal(a: Route, b: Route) -> bool:
    """Literal segments win over parameters, earliest segment first (/a/new beats /a/{id})."""
    return [s is None for s in a.segments] < [s is None for s in b.segments]


def get_router() -> EndpointRouter:
    """This app's (so this web process's) route table."""
    return current_app.extensions["endpoint_router"]


def _on_saved(script: Script, **_: object) -> None:
    router = get_router()
    if script.type == "endpoint" or any(r.script_id == script.id for rs in router._routes.values() for r in rs):
        router.changed(get_redis())  # includes a script that stopped being an endpoint


def _on_deleted(script: Script, **_: object) -> None:
    get_router().changed(get_redis())


def init_app(app: Flask) -> None:
    """Script changes update this process's routes and tell every other process."""
    app.extensions["endpoint_router"] = EndpointRouter()
    script_saved.connect(_on_saved)  # module-level receivers: connecting again is a no-op
    script_deleted.connect(_on_deleted)
