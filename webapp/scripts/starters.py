"""The source a new script starts with, one per type, and when a type switch replaces it.

Each starter runs as saved for its type (docs/scripting.md: what `main` gets and returns).
"""

STARTERS: dict[str, str] = {
    "manual": """async function main(event) {
  console.log("hello from", context.script.name);
  return { ok: true, event };
}
""",
    "endpoint": """async function main(req) {
  // req: { method, path, params, query, headers, body, json, ip } (see docs/endpoints.md)
  const name = req.params.name ?? "world";
  console.log(req.method, req.path);
  return { status: 200, body: { hello: name } };
}
""",
    "cron": """async function main(event) {
  // event: { type: "cron", scheduled_at, fired_at }, ISO 8601 times (see docs/cron.md)
  console.log("scheduled for", event.scheduled_at, "fired at", event.fired_at);
  return { scheduled_at: event.scheduled_at };
}
""",
}


def starter(type_: str | None) -> str:
    return STARTERS.get(type_ or "manual", STARTERS["manual"])


def is_untouched(source: str | None) -> bool:
    """Still a starter of some type as written (or empty): nothing typed would be lost."""
    text = (source or "").replace("\r\n", "\n").strip()
    return not text or any(text == s.strip() for s in STARTERS.values())


def after_type_switch(source: str | None, type_: str | None) -> str | None:
    """The source once the form's type is `type_`: that type's starter while the source is
    untouched, else the source as it is."""
    return starter(type_) if is_untouched(source) else source
