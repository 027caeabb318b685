"""The examples gallery of the new-script page: each example fills the form with a working script.

To add one, append an `Example` to EXAMPLES: its `fields` are the form's (name, type, source and
the type's trigger fields), its `sample` what a draft run of it gets (the test suite runs every
example as a draft through a real worker and expects it to succeed).
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    key: str
    title: str
    summary: str
    fields: dict[str, Any]
    sample: dict[str, Any] = field(default_factory=dict)


EXAMPLES: tuple[Example, ...] = (
    Example(
        key="daily-report",
        title="Daily report (cron)",
        summary="Every morning at 07:00 UTC: counts its reports in storage and logs the day.",
        fields={
            "name": "Daily report",
            "type": "cron",
            "cron_expression": "0 7 * * *",
            "timezone": "UTC",
            "source": """async function main(event) {
  // event: { type: "cron", scheduled_at, fired_at }, ISO 8601 times
  const day = event.scheduled_at.slice(0, 10);
  const reports = ((await storage.get("daily-report:count")) ?? 0) + 1;
  await storage.set("daily-report:count", reports);
  console.log(`report ${reports} for ${day}, fired at ${event.fired_at}`);
  return { day, reports };
}
""",
        },
    ),
    Example(
        key="json-endpoint",
        title="JSON endpoint",
        summary="GET /greet/{name}?lang=de answers JSON; an unknown language is a 400.",
        fields={
            "name": "Greeting endpoint",
            "type": "endpoint",
            "endpoint_method": "GET",
            "endpoint_path": "/greet/{name}",
            "source": """async function main(req) {
  // req: { method, path, params, query, headers, body, json, ip }
  const greetings = { en: "Hello", de: "Hallo", fr: "Bonjour" };
  const lang = req.query.lang ?? "en";
  if (!(lang in greetings)) {
    return { status: 400, body: { error: `unknown language ${lang}`, known: Object.keys(greetings) } };
  }
  return { status: 200, body: { greeting: `${greetings[lang]}, ${req.params.name}!` } };
}
""",
        },
        sample={"params": {"name": "Ann"}, "query": {"lang": "de"}},
    ),
    Example(
        key="storage-counter",
        title="Storage counter",
        summary="Run it by hand: adds event.by (default 1) to a counter kept in storage.",
        fields={
            "name": "Storage counter",
            "type": "manual",
            "source": """async function main(event) {
  const key = `counter:${event.name ?? "default"}`;
  const count = ((await storage.get(key)) ?? 0) + (event.by ?? 1);
  await storage.set(key, count);
  console.log(key, "is now", count);
  return { key, count };
}
""",
        },
        sample={"name": "visits", "by": 2},
    ),
    Example(
        key="fetch-with-secret",
        title="Fetch with a secret",
        summary="Posts JSON to an API with a Bearer token read from the secret API_TOKEN.",
        fields={
            "name": "Post to an API",
            "type": "manual",
            "source": """async function main(event) {
  // Set the secret API_TOKEN first (Secrets page): it is sent, never recorded.
  const token = await secrets.get("API_TOKEN");
  if (token === null) throw new Error("set the secret API_TOKEN first (Secrets page)");
  const url = event.url ?? "https://httpbin.org/post";
  const response = await fetch(url, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ text: event.text ?? "Hello", sent_at: new Date().toISOString() }),
    timeoutMs: 5000,
  });
  if (!response.ok) {
    const detail = (await response.text()).slice(0, 200);
    throw new Error(`${url} answered ${response.status} ${response.statusText}: ${detail}`);
  }
  console.log("posted:", response.status);
  return { status: response.status, answer: await response.json() };
}
""",
        },
        sample={"url": "https://httpbin.org/post", "text": "Deploy finished"},
    ),
)
BY_KEY = {example.key: example for example in EXAMPLES}
