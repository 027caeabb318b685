"""Host names as the guard compares them, and host patterns (`api.example.com`, `*.example.com`).

One normal form for the URL's host, FETCH_BLOCKED_HOSTS and a tenant's allowlist: lower case,
IDNA (ASCII, `xn--`), no trailing dot. Pure: no network.
"""

import re
from collections.abc import Iterable

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normal_name(name: str) -> str:
    """`name` in ASCII lower case without a trailing dot; ValueError when it is no host name."""
    name = name.strip().rstrip(".")
    if not name:
        raise ValueError("empty host name")
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"{name!r} is not a valid host name") from exc
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{name!r} is not a valid host name")
    return ascii_name


def parse_host_patterns(raw: str) -> tuple[str, ...]:
    """A comma- or space-separated list of host names and `*.`-patterns, each in normal form;
    ValueError naming the first bad entry."""
    patterns = []
    for entry in re.split(r"[,\s]+", raw.strip()):
        if not entry:
            continue
        wildcard = entry.startswith("*.")
        try:
            name = normal_name(entry[2:] if wildcard else entry)
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not a host name or a *.pattern: {exc}") from exc
        patterns.append(f"*.{name}" if wildcard else name)
    return tuple(patterns)


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether the normal host name `host` is one of `patterns`. `*.example.com` matches every
    name under example.com, at any depth, but not example.com itself."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False
