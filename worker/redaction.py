"""Redaction: what a run stores and shows never holds a secret value it read (docs/secrets.md).

worker/jobs.py applies it once, to everything the sandbox hands back, before anything about
the run is stored, logged or answered (except an endpoint's response body, sent as the
script returned it: docs/secrets.md).
"""

import json
import re
from urllib.parse import quote

from worker.fetch.errors import FetchError
from worker.fetch.guard import PATH_SAFE, QUERY_SAFE, parse_url
from worker.runtime.protocol import CLIP_MARK

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string literal

MIN_CHARS = 4  # shorter values would blank out ordinary words and numbers


class Redactor:
    def __init__(self, values: dict[str, str]):
        forms: dict[str, str] = {}
        for name, value in values.items():
            if len(value) < MIN_CHARS:
                continue
            forms.setdefault(value, name)
            escaped = json.dumps(value, ensure_ascii=False)[1:-1]  # as it appears inside JSON text
            for form in (escaped, *_url_forms(value)):
                if form != value and len(form) >= MIN_CHARS:
                    forms.setdefault(form, name)
        # Longest first: a value that contains another is replaced whole.
        self._forms = sorted(forms.items(), key=lambda item: len(item[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, text: str | None) -> str | None:
        if not text or not self._forms:
            return text
        for value, name in self._forms:
            if value in text:
                text = text.replace(value, f"[secret {name}]")
        return self._cut_short(text) if CLIP_MARK in text else text

    def url(self, url: str) -> str:
        """A fetch summary's URL (scheme, host and path): redacted of values, and of a value's
        part before its query string, which is all the summary keeps of a secret URL."""
        url = self.text(url) or url
        for value, name in self._forms:
            base = value.partition("?")[0]
            if base != value and len(base) >= MIN_CHARS and base in url:
                url = url.replace(base, f"[secret {name}]")
        return url

    def _cut_short(self, text: str) -> str:
        """A value the sandbox's clip cut in two: its beginning, just before the mark, goes too."""
        parts = text.split(CLIP_MARK)
        for i, part in enumerate(parts[:-1]):
            cuts = [(_tail_of(part, value), name) for value, name in self._forms]
            kept, name = max(cuts, key=lambda cut: cut[0])
            if kept >= MIN_CHARS:
                parts[i] = part[:-kept] + f"[secret {name}]"
        return CLIP_MARK.join(parts)

    def json_text(self, text: str | None) -> str | None:
        """JSON text with every string literal (object keys too) redacted; walked as text, so
        a result nested as deep as the engine allows costs no recursion here."""
        if not text or not self._forms or not any(value in text for value, _ in self._forms):
            return text
        return _STRING.sub(lambda m: json.dumps(self.text(json.loads(m.group())), ensure_ascii=False), text)


def _url_forms(value: str) -> set[str]:
    """The value as a fetch's URL may hold it once %-encoded (by the script's encodeURIComponent,
    or by the platform, which also writes a URL in its normal form: host in lower case, no
    default port, no fragment): a call summary or a fetch message shows that form, not the value."""
    forms = {quote(value, safe=safe) for safe in (PATH_SAFE, QUERY_SAFE, "!*'()")}
    forms.add(value.lower())  # a host name
    try:
        target = parse_url(value)
    except (FetchError, ValueError):
        return forms
    return forms | {target.url, target.redacted}


def _tail_of(text: str, value: str) -> int:
    """How many characters of `value`'s beginning end `text` (the longest), at least MIN_CHARS, else 0."""
    head = value[:MIN_CHARS]
    start = text.find(head, max(0, len(text) - len(value) + 1))
    while start != -1:
        if value.startswith(text[start:]):
            return len(text) - start
        start = text.find(head, start + 1)
    return 0
