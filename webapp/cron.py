"""Cron schedules: validation, descriptions and fire times, shared by the forms,
the REST ``validate`` call and the scheduler.  Pure: no Flask, no database.

Syntax: 5 fields ``min hour dom mon dow``; 6 fields with seconds first
(robfig/cron's seconds mode); ``@yearly``/``@annually``/``@monthly``/``@weekly``/
``@daily``/``@midnight``/``@hourly``; ``@every <duration>`` (``30s``, ``5m``,
``1h30m``; at least 1s).  Fields take numbers, ``*``, ranges ``a-b``, lists
``a,b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (``a`` to the field's end), and
JAN-DEC / SUN-SAT names in any case.  Day-of-week 0 and 7 are Sunday.

Semantics, evaluated in the schedule's IANA timezone:

* If day-of-month and day-of-week are both restricted (neither covers its whole
  range), a day matching either fires; otherwise a day must match both.
* DST gap: a wall-clock fire that does not exist runs at the first instant after
  the gap; fires that then coincide run once.
* DST overlap: a wall-clock time that occurs twice fires once, at its first
  occurrence.  Exception (as in Vixie cron): a schedule whose second, minute or
  hour field starts with ``*`` (``0 * * * *``, ``*/5 * * * *``, ...) runs on
  real time through the repeated hour, so "hourly" fires every real hour.
* ``@every d`` fires at ``anchor + k*d`` for whole k >= 0; the anchor is the
  time the schedule was saved.  Nothing fires before the anchor, so the first
  fire after an earlier time is the anchor itself.

Fields are parsed here (for messages that name the field); the next matching
wall-clock time comes from ``cronsim``, always on naive wall-clock times.  The
step from wall-clock time to a real instant (the DST rules above) is done here
because the libraries do it differently (see tests/test_cron.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import get_description
from cronsim import CronSim


class CronError(ValueError):
    """Invalid expression or timezone; ``str(error)`` is the message for the user."""


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  # names[i] stands for lo + i

    def value(self, token: str, context: str) -> int:
        if token.upper() in self.names:
            return self.lo + self.names.index(token.upper())
        if not (token.isascii() and token.isdigit()):
            raise CronError(f"{self.name}: {token or context!r} is not a valid value")
        number = int(token)
        if not self.lo <= number <= self.hi:
            raise CronError(f"{self.name}: {number} is out of range {self.lo}-{self.hi}")
        return number

    def parse(self, text: str) -> frozenset[int]:
        values: set[int] = set()
        for item in text.split(","):
            body, slash, step_text = item.partition("/")
            step = 1
            if slash:
                if not (step_text.isascii() and step_text.isdigit()):
                    raise CronError(f"{self.name}: {item!r} is not a valid value")
                step = int(step_text)
                if step < 1:
                    raise CronError(f"{self.name}: step must be at least 1")
            if body == "*":
                lo, hi = self.lo, self.hi
            else:
                first, dash, last = body.partition("-")
                lo = self.value(first, item or text)
                hi = self.value(last, item or text) if dash else self.hi if slash else lo
                if lo > hi:
                    raise CronError(f"{self.name}: range {body!r} starts after it ends")
            values.update(range(lo, hi + 1, step))
        return frozenset(v % 7 for v in values) if self.name == "day-of-week" else frozenset(values)

    def is_restricted(self, values: frozenset[int]) -> bool:
        return values != self.parse("*")


_SECOND = _Field("second", 0, 59)
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    _Field("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.IGNORECASE)
_DURATION_HINT = "(e.g. 30s, 5m, 1h30m)"
_SECOND_STEP = timedelta(seconds=1)


@dataclass(frozen=True)
class Schedule:
    """A validated expression bound to a timezone; build it with :func:`parse`."""

    expression: str
    timezone: str
    _fields: str = field(default="", repr=False)  # the expression with a descriptor spelled out
    _cron: str = field(default="", repr=False)  # seconds-first, for cronsim
    _real_time: bool = field(default=False, repr=False)  # fire in both runs of a repeated hour
    _every: timedelta | None = field(default=None, repr=False)
    _anchor: datetime | None = field(default=None, repr=False)

    def next_after(self, after: datetime) -> datetime:
        """First fire strictly after ``after`` (aware), as an aware UTC datetime."""
        if after.tzinfo is None:
            raise ValueError("after must be a timezone-aware datetime")
        after = after.astimezone(UTC).replace(microsecond=0)
        if self._every is not None and self._anchor is not None:
            if after < self._anchor:
                return self._anchor
            return self._anchor + ((after - self._anchor) // self._every + 1) * self._every
        return _next_cron_fire(self._cron, self._real_time, self.timezone, after)

    @cached_property
    def description(self) -> str:
        """In words; only forms and pages ask (the scheduler parses many and never does)."""
        return _describe_every(self._every) if self._every is not None else _describe(self._fields)

    def next_fires(self, after: datetime, count: int = 5) -> list[datetime]:
        """The next ``count`` fires strictly after ``after``, as aware UTC datetimes."""
        fires: list[datetime] = []
        for _ in range(count):
            after = self.next_after(after)
            fires.append(after)
        return fires


def describe(expression: object, timezone: object, anchor: datetime | None = None) -> dict:
    """What an expression means and when it fires next, in the answer's shape of
    ``POST /api/v1/cron/validate`` (fires as ISO instants in UTC); ``anchor`` is when the
    schedule was saved (for @every). Never raises: an invalid one comes back with its error."""
    if not isinstance(expression, str) or not isinstance(timezone, str | None):
        return {"valid": False, "description": None, "next": [], "error": "expression and timezone must be strings"}
    try:
        schedule = parse(expression, timezone or "UTC", anchor=anchor)
    except CronError as exc:
        return {"valid": False, "description": None, "next": [], "error": str(exc)}
    fires = schedule.next_fires(datetime.now(UTC), 5)
    return {"valid": True, "description": schedule.description, "next": [f.isoformat() for f in fires], "error": None}


def uses_anchor(expression: str) -> bool:
    """Whether the expression's fires depend on the anchor (@every)."""
    words = expression.split()
    return bool(words) and words[0].lower() == "@every"


def check_timezone(name: str) -> str:
    """Return ``name`` (stripped) if it is an IANA timezone, else raise CronError."""
    try:
        ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown timezone {name!r}") from None
    return name.strip()


def parse(expression: str, timezone: str = "UTC", anchor: datetime | None = None) -> Schedule:
    """Validate ``expression`` in ``timezone``; ``anchor`` (default now) is for @every."""
    words = expression.split()
    if not words:
        raise CronError("cron expression is required")
    timezone = check_timezone(timezone)
    if anchor is not None and anchor.tzinfo is None:
        raise ValueError("anchor must be a timezone-aware datetime")
    text = " ".join(words)
    keyword = words[0].lower()
    if keyword == "@every":
        every = _parse_duration(words[1:])
        start = (anchor or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        return Schedule(text, timezone, _every=every, _anchor=start)
    if keyword.startswith("@"):
        if keyword not in _DESCRIPTORS:
            raise CronError(f"unknown descriptor {words[0]!r} (use one of {', '.join(_DESCRIPTORS)} or @every)")
        if len(words) > 1:
            raise CronError(f"{words[0]} takes no further fields")
        words = _DESCRIPTORS[keyword].split()
    if len(words) not in (5, 6):
        raise CronError(f"expected 5 or 6 fields (or a @descriptor), got {len(words)}")
    second = _SECOND.parse(words[0]) if len(words) == 6 else frozenset({0})
    values = [spec.parse(word) for spec, word in zip(_FIELDS, words[-5:], strict=True)]
    dom, month, dow = values[2:]
    if not _FIELDS[4].is_restricted(dow) and min(dom) > max(_DAYS_IN_MONTH[m] for m in month):
        raise CronError(f"day-of-month: {min(dom)} never occurs in the selected months")
    cron = " ".join(
        ",".join(map(str, sorted(v))) if spec.is_restricted(v) else "*"
        for spec, v in zip((_SECOND, *_FIELDS), (second, *values), strict=True)
    )
    real_time = any(word.startswith("*") for word in words[-5:-3] + words[:-5])
    return Schedule(text, timezone, _fields=" ".join(words), _cron=cron, _real_time=real_time)


_MAX_EVERY_SECONDS = 366 * 24 * 3600


def _parse_duration(words: list[str]) -> timedelta:
    if not words:
        raise CronError(f"@every: a duration is required {_DURATION_HINT}")
    match = _DURATION.fullmatch(words[0])
    if len(words) > 1 or not words[0] or not match:
        raise CronError(f"@every: {' '.join(words)!r} is not a valid duration {_DURATION_HINT}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise CronError("@every: duration must be at least 1s")
    if total > _MAX_EVERY_SECONDS:
        raise CronError("@every: duration must be at most 8784h (a year)")
    return timedelta(seconds=total)


def _describe(cron: str) -> str:
    try:
        return str(get_description(cron))
    except Exception:  # a description must never block saving a valid schedule
        return cron


def _describe_every(every: timedelta) -> str:
    rest, parts = int(every.total_seconds()), []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return "Every " + " ".join(parts)


@lru_cache(maxsize=4096)
def _next_cron_fire(cron: str, real_time: bool, timezone: str, after: datetime) -> datetime:
    """First fire of a cron expression strictly after ``after`` (UTC, whole seconds).

    Memoized: many scripts share an expression and fall due at the same instant, and the
    scheduler asks for each one's next fire (10,000 every-minute scripts, one computation).
    """
    tz = ZoneInfo(timezone)
    folds = (0, 1) if real_time else (0,)
    return min(_next_in_fold(cron, after, tz, fold) for fold in folds)


def _instants(wall: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC readings of naive ``wall`` with fold=0 and fold=1.

    Equal for a normal time; fold=0 earlier in a repeated hour; fold=0 later in a gap.
    """
    first, second = (wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))
    return first, second


def _transition(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """First whole second in (lo, hi] whose UTC offset differs from lo's."""
    offset = lo.astimezone(tz).utcoffset()
    while hi - lo > _SECOND_STEP:
        mid = (lo + (hi - lo) / 2).replace(microsecond=0)
        lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == offset else (lo, mid)
    return hi


def _next_in_fold(cron: str, after: datetime, tz: ZoneInfo, fold: int) -> datetime:
    """Next fire after ``after`` when repeated wall-clock times are read with ``fold``.

    Reading every wall-clock time with one fold maps them onto real instants in
    order, so the next fire is the next matching wall-clock time after ``after``'s
    own -- unless ``after`` lies in the other run of a repeated hour; then start
    from the edge of that hour.
    """
    local = after.astimezone(tz)
    wall = local.replace(tzinfo=None, fold=0)
    first, second = _instants(wall, tz)
    if first < second and local.fold != fold:
        start = _transition(tz, first, second).astimezone(tz).replace(tzinfo=None, fold=0)
        wall = (start + (second - first) if local.fold else start) - _SECOND_STEP
    fire = next(CronSim(cron, wall))
    first, second = _instants(fire, tz)
    if first > second:  # in a DST gap: the first instant after it
        return _transition(tz, second, first)
    return second if fold else first
