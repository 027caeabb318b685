"""Tests for webapp.cron.  Every expected fire time below was worked out by hand.

Calendar notes: 2026-01-01 is a Thursday.  Europe/Berlin is CET (+01) in winter
and CEST (+02) in summer; 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00Z) and
2026-10-25 03:00 CEST falls back to 02:00 CET (01:00Z), so 02:00-02:59 local
happens twice: 00:00-00:59Z (CEST) and 01:00-01:59Z (CET).  America/New_York
jumps 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z).
"""

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta

import pytest

from webapp.cron import CronError, check_timezone, parse

JAN1 = "2026-01-01T00:00:00Z"
HINT = "(e.g. 30s, 5m, 1h30m)"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def fires(expression: str, after: str, count: int, timezone: str = "UTC") -> list[str]:
    result = parse(expression, timezone).next_fires(at(after), count)
    assert all(fire.tzinfo is UTC for fire in result)
    return [fire.strftime("%Y-%m-%dT%H:%M:%SZ") for fire in result]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # 5 fields: minute hour day-of-month month day-of-week
        ("*/5 * * * *", ["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:15:00Z"]),
        ("30 2 * * *", ["2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z", "2026-01-03T02:30:00Z"]),
        ("0 9 * * MON-FRI", ["2026-01-01T09:00:00Z", "2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z"]),
        ("0 0 1 jan,Jul *", ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"]),
        ("0 12 * * sun", ["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z", "2026-01-18T12:00:00Z"]),
        ("0 12 * * 7", ["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z", "2026-01-18T12:00:00Z"]),
        ("0 12 * * 0", ["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z", "2026-01-18T12:00:00Z"]),
        (
            "1-10/2 * * * *",
            [
                "2026-01-01T00:01:00Z",
                "2026-01-01T00:03:00Z",
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:07:00Z",
                "2026-01-01T00:09:00Z",
                "2026-01-01T01:01:00Z",
            ],
        ),
        (
            "0,30 8-9 * * *",
            [
                "2026-01-01T08:00:00Z",
                "2026-01-01T08:30:00Z",
                "2026-01-01T09:00:00Z",
                "2026-01-01T09:30:00Z",
                "2026-01-02T08:00:00Z",
            ],
        ),
        (
            "15/20 * * * *",
            ["2026-01-01T00:15:00Z", "2026-01-01T00:35:00Z", "2026-01-01T00:55:00Z", "2026-01-01T01:15:00Z"],
        ),
        # Both day fields restricted: the 13th OR any Friday (Jan 2, 9, 16 are Fridays).
        (
            "0 0 13 * FRI",
            ["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z"],
        ),
        # Only day-of-month restricted: days 1, 11, 21, 31 of every month.
        (
            "0 0 */10 * *",
            ["2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z", "2026-01-31T00:00:00Z", "2026-02-01T00:00:00Z"],
        ),
        ("0 0 29 2 *", ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
        # 6 fields, seconds first.
        ("*/1 * * * * *", ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"]),
        ("30 */5 * * * *", ["2026-01-01T00:00:30Z", "2026-01-01T00:05:30Z", "2026-01-01T00:10:30Z"]),
        ("0 30 2 * * *", ["2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z"]),
        ("15,45 0 0 * * *", ["2026-01-01T00:00:15Z", "2026-01-01T00:00:45Z", "2026-01-02T00:00:15Z"]),
        # Descriptors.
        ("@yearly", ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
        ("@annually", ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
        ("@monthly", ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]),
        ("@weekly", ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("@daily", ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
        ("@midnight", ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
        ("@DAILY", ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
        ("@hourly", ["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]),
    ],
)
def test_next_fires_utc(expression: str, expected: list[str]) -> None:
    assert fires(expression, JAN1, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "timezone", "after", "expected"),
    [
        ("0 9 * * *", "Asia/Kolkata", JAN1, ["2026-01-01T03:30:00Z", "2026-01-02T03:30:00Z"]),
        ("0 9 * * *", "America/New_York", JAN1, ["2026-01-01T14:00:00Z", "2026-01-02T14:00:00Z"]),
        # Spring forward: 02:30 does not exist on 29 March, so it runs at 03:00 CEST.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        ),
        (
            "0 30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        ),
        ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]),
        # 02:00 and 02:30 both move to 03:00 and coincide with the 03:00 fire: one run.
        (
            "0,30 2,3 * * *",
            "Europe/Berlin",
            "2026-03-29T00:00:00Z",
            ["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:00:00Z"],
        ),
        # Fall back: 02:30 happens twice on 25 October; it runs once, at the first (CEST) one.
        ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
        ("0 30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
        # Asked from inside the second (CET) 02:00-02:59: 02:30 already ran in the first one.
        ("30 2 * * *", "Europe/Berlin", "2026-10-25T01:00:00Z", ["2026-10-26T01:30:00Z"]),
        # Midnight on 1 April is CEST: 2026-03-31 22:00Z (croniter 2.0.5 once said 21:00Z).
        ("0 0 1 * *", "Europe/Berlin", "2026-03-15T00:00:00Z", ["2026-03-31T22:00:00Z", "2026-04-30T22:00:00Z"]),
        # Decision for the repeated hour: the rule "a local time that occurs twice fires
        # once" is applied to schedules pinned to a time of day (second, minute and hour
        # fields not starting with "*").  Schedules whose second, minute or hour field
        # starts with "*" (hourly, every N minutes/seconds) run on real time, as Vixie
        # cron does, so they do not pause for an hour each autumn: 02:00 CEST (00:00Z)
        # and 02:00 CET (01:00Z) both fire, and every UTC hour gets exactly one run.
        (
            "0 * * * *",
            "Europe/Berlin",
            "2026-10-24T22:30:00Z",
            [
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z",
            ],
        ),
        (
            "*/30 * * * *",
            "Europe/Berlin",
            "2026-10-25T00:45:00Z",
            ["2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"],
        ),
        (
            "*/1 * * * * *",
            "Europe/Berlin",
            "2026-10-25T00:59:58Z",
            ["2026-10-25T00:59:59Z", "2026-10-25T01:00:00Z", "2026-10-25T01:00:01Z"],
        ),
        # Hourly across spring forward: 02:00 moves to 03:00 and coincides with it.
        (
            "0 * * * *",
            "Europe/Berlin",
            "2026-03-28T22:30:00Z",
            ["2026-03-28T23:00:00Z", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"],
        ),
    ],
)
def test_next_fires_in_timezone(expression: str, timezone: str, after: str, expected: list[str]) -> None:
    assert fires(expression, after, len(expected), timezone) == expected


def test_next_after_is_strict_and_truncates_to_seconds() -> None:
    schedule = parse("*/1 * * * * *")
    assert schedule.next_after(at("2026-01-01T00:00:00.750000Z")) == at("2026-01-01T00:00:01Z")
    assert schedule.next_after(at("2026-01-01T00:00:01Z")) == at("2026-01-01T00:00:02Z")
    assert parse("0 9 * * *", "Europe/Berlin").next_after(at("2026-01-01T09:00:00+01:00")) == at("2026-01-02T08:00:00Z")


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="after must be a timezone-aware"):
        parse("* * * * *").next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="anchor must be a timezone-aware"):
        parse("@every 1m", anchor=datetime(2026, 1, 1))


ANCHOR = at("2026-01-01T10:00:00Z")


@pytest.mark.parametrize(
    ("duration", "after", "expected"),
    [
        ("90s", ANCHOR, ["2026-01-01T10:01:30Z", "2026-01-01T10:03:00Z", "2026-01-01T10:04:30Z"]),
        ("30s", ANCHOR, ["2026-01-01T10:00:30Z", "2026-01-01T10:01:00Z"]),
        ("5m", ANCHOR, ["2026-01-01T10:05:00Z", "2026-01-01T10:10:00Z"]),
        ("1h30m", ANCHOR, ["2026-01-01T11:30:00Z", "2026-01-01T13:00:00Z"]),
        ("2H", ANCHOR, ["2026-01-01T12:00:00Z", "2026-01-01T14:00:00Z"]),
        # Between two fires: the next whole multiple of the duration after the anchor.
        ("90s", ANCHOR + timedelta(seconds=100), ["2026-01-01T10:03:00Z", "2026-01-01T10:04:30Z"]),
        # Decision: nothing fires before the anchor (the time the schedule was saved), so
        # asking from any earlier time gives the anchor itself, then the anchor + k*90s.
        ("90s", ANCHOR - timedelta(days=1), ["2026-01-01T10:00:00Z", "2026-01-01T10:01:30Z"]),
        ("90s", ANCHOR - timedelta(seconds=1), ["2026-01-01T10:00:00Z", "2026-01-01T10:01:30Z"]),
    ],
)
def test_every(duration: str, after: datetime, expected: list[str]) -> None:
    result = parse(f"@every {duration}", anchor=ANCHOR).next_fires(after, len(expected))
    assert [fire.strftime("%Y-%m-%dT%H:%M:%SZ") for fire in result] == expected


def test_every_counts_real_time_and_truncates_the_anchor() -> None:
    anchor = at("2026-10-25T02:30:00.900000+02:00")  # 00:30Z, first 02:30 of the Berlin fall back
    schedule = parse("@every 1h", "Europe/Berlin", anchor=anchor)
    assert schedule.next_fires(anchor, 2) == [at("2026-10-25T01:30:00Z"), at("2026-10-25T02:30:00Z")]


def test_every_anchor_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    schedule = parse("@every 1m")
    first = schedule.next_after(before - timedelta(days=1))
    assert before <= first <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        ("*/5 * * * *", "Every 5 minutes"),
        ("30 2 * * *", "At 02:30 AM"),
        ("0 9 * * MON-FRI", "At 09:00 AM, Monday through Friday"),
        ("*/1 * * * * *", "Every second"),
        ("@hourly", "Every hour"),
        ("@every 1h30m", "Every 1 hour 30 minutes"),
        ("@every 90s", "Every 1 minute 30 seconds"),
        ("@every 1s", "Every 1 second"),
    ],
)
def test_description(expression: str, description: str) -> None:
    assert parse(expression).description == description


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "cron expression is required"),
        ("   ", "cron expression is required"),
        ("60 * * * * *", "second: 60 is out of range 0-59"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 25 * * *", "hour: 25 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month: 32 is out of range 1-31"),
        ("0 0 * 0 *", "month: 0 is out of range 1-12"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
        ("0 0 1-40 * *", "day-of-month: 40 is out of range 1-31"),
        ("* * * * FOO", "day-of-week: 'FOO' is not a valid value"),
        ("* * * * JAN", "day-of-week: 'JAN' is not a valid value"),
        ("* * * MON *", "month: 'MON' is not a valid value"),
        ("x * * * *", "minute: 'x' is not a valid value"),
        ("-5 * * * *", "minute: '-5' is not a valid value"),
        ("1,,2 * * * *", "minute: '1,,2' is not a valid value"),
        ("*/x * * * *", "minute: '*/x' is not a valid value"),
        ("*/0 * * * *", "minute: step must be at least 1"),
        ("0 20-5 * * *", "hour: range '20-5' starts after it ends"),
        ("0 0 30 2 *", "day-of-month: 30 never occurs in the selected months"),
        ("0 0 31 4,6 *", "day-of-month: 31 never occurs in the selected months"),
        ("*", "expected 5 or 6 fields (or a @descriptor), got 1"),
        ("* * * *", "expected 5 or 6 fields (or a @descriptor), got 4"),
        ("1 2 3 4 5 6 7", "expected 5 or 6 fields (or a @descriptor), got 7"),
        (
            "@reboot",
            "unknown descriptor '@reboot' (use one of @yearly, @annually, @monthly, "
            "@weekly, @daily, @midnight, @hourly or @every)",
        ),
        ("@daily 5", "@daily takes no further fields"),
        ("@every", f"@every: a duration is required {HINT}"),
        ("@every 0s", "@every: duration must be at least 1s"),
        ("@every 0h0m", "@every: duration must be at least 1s"),
        ("@every 99999999999h", "@every: duration must be at most 8784h (a year)"),
        ("@every 9999999999999s", "@every: duration must be at most 8784h (a year)"),
        ("@every abc", f"@every: 'abc' is not a valid duration {HINT}"),
        ("@every 5", f"@every: '5' is not a valid duration {HINT}"),
        ("@every 1.5h", f"@every: '1.5h' is not a valid duration {HINT}"),
        ("@every -5s", f"@every: '-5s' is not a valid duration {HINT}"),
        ("@every 1h 30m", f"@every: '1h 30m' is not a valid duration {HINT}"),
    ],
)
def test_invalid_expression(expression: str, message: str) -> None:
    with pytest.raises(CronError) as error:
        parse(expression)
    assert str(error.value) == message


@pytest.mark.parametrize("name", ["Mars/Base", "", "Europe", "../etc/passwd", "/etc/localtime"])
def test_unknown_timezone(name: str) -> None:
    with pytest.raises(CronError) as error:
        parse("* * * * *", name)
    assert str(error.value) == f"unknown timezone {name!r}"


def test_check_timezone_returns_the_name() -> None:
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    assert check_timezone(" UTC ") == "UTC"


def test_schedule_fields() -> None:
    schedule = parse("  */5   *  * * *  ", "Europe/Berlin")
    assert (schedule.expression, schedule.timezone) == ("*/5 * * * *", "Europe/Berlin")
    assert isinstance(CronError("x"), ValueError)
    with pytest.raises(FrozenInstanceError):
        schedule.expression = "* * * * *"  # type: ignore[misc]


def _latest_by_stepping(schedule, first: datetime, now: datetime) -> datetime:
    latest = first
    while (following := schedule.next_after(latest)) <= now:
        latest = following
    return latest


@pytest.mark.parametrize(
    ("expression", "timezone", "gap"),
    [
        ("* * * * * *", "UTC", timedelta(minutes=7, seconds=13)),
        ("*/5 * * * *", "Europe/Berlin", timedelta(days=3, hours=5)),
        ("30 2 * * *", "Europe/Berlin", timedelta(days=40)),  # across the March DST gap
        ("0 9 * * MON-FRI", "America/New_York", timedelta(days=20)),
        ("0 0 1 1 *", "UTC", timedelta(days=800)),
        ("@every 90s", "UTC", timedelta(hours=6, seconds=7)),
    ],
)
def test_the_latest_missed_fire_is_the_one_stepping_finds(expression: str, timezone: str, gap: timedelta) -> None:
    from worker.scheduler import latest_fire_at_or_before

    start = datetime(2026, 3, 10, 12, 0, 0, 300_000, tzinfo=UTC)
    schedule = parse(expression, timezone, anchor=start)
    first = schedule.next_after(start)
    now = first + gap
    assert latest_fire_at_or_before(schedule, first, now) == _latest_by_stepping(schedule, first, now)


def test_the_latest_missed_fire_after_a_month_down_with_an_every_second_script() -> None:
    """2.6 million missed fires: more than the scheduler would ever step through one by one."""
    from worker.scheduler import latest_fire_at_or_before

    schedule = parse("* * * * * *", "UTC")
    first = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 1, 31, 8, 15, 42, 900_000, tzinfo=UTC)
    assert latest_fire_at_or_before(schedule, first, now) == datetime(2026, 1, 31, 8, 15, 42, tzinfo=UTC)
