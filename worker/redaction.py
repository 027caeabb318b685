"""Redaction: what a run stores and shows never holds a secret value it read (SPEC §11).

worker/jobs.py applies it once, to everything the sandbox hands back, before anything about
the run is stored, logged or answered (except an endpoint's response body, sent as the
script returned it: docs/secrets.md).
"""

import json
import re

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
            if escaped != value:
                forms.setdefault(escaped, name)
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
        return text

    def json_text(self, text: str | None) -> str | None:
        """JSON text with every string literal (object keys too) redacted; walked as text, so
        a result nested as deep as the engine allows costs no recursion here."""
        if not text or not self._forms or not any(value in text for value, _ in self._forms):
            return text
        return _STRING.sub(lambda m: json.dumps(self.text(json.loads(m.group())), ensure_ascii=False), text)
