"""One run's fetch calls: started in threads as the sandbox asks, answered as they end.

The sandbox hands over `fetch` host calls with the others; each starts at once in one of the
process's fetch threads (while fewer than max_in_flight of the run's calls are on the wire;
the others wait their turn in the run's queue), and its answer goes back in a later batch,
when it is ready: several calls of a run wait on the network together, and a run waiting on
one still gets its storage answers. What the run keeps of each call is its summary.
"""

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextvars import Context, copy_context
from dataclasses import dataclass
from typing import Any

from webapp.config import FetchSettings
from worker.fetch import client, connection
from worker.fetch.errors import FetchError
from worker.fetch.guard import Policy

log = logging.getLogger(__name__)
# Per batch handed back, as the channel carries it: several answers share a batch only within
# it (one alone may be larger: a body at the largest cap, with headers, is under 58 MiB), so
# that no message passes the channel's 64 MiB.
MAX_ANSWERS_BYTES = 24 * 1024 * 1024
# The calls of every run of the process: threads are started as calls need them and kept for
# the next (a thread started per call cost more CPU than the call). Each run has at most
# max_in_flight calls here; the bound only stops a runaway.
_THREADS = ThreadPoolExecutor(1024, thread_name_prefix="fetch")


@dataclass(frozen=True)
class _Call:
    id: int  # the sandbox's host call id
    method: str
    url: str
    started: float
    slot: int  # its place among the run's calls, in the order made


class RunFetches:
    def __init__(self, settings: FetchSettings, policy: Policy, deadline: float, owner: str | None = None):
        self.settings = settings
        self.policy = policy
        self.deadline = deadline  # time.monotonic(): the run's wall limit
        self.started = 0  # calls made, refused ones included
        self.abort = connection.Abort(owner)
        self._waiting: deque[tuple[Future, Context, client.Request]] = deque()  # not started yet
        self._running = 0  # calls of the run in _THREADS
        self._lock = threading.Lock()
        self._pending: dict[Future, _Call] = {}
        self._summaries: list[dict[str, Any] | None] = []  # client.summary of each call, in the order made

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The summaries of the calls that have ended, in the order they were made."""
        return [summary for summary in self._summaries if summary is not None]

    def start(self, call_id: int, arg: dict[str, Any]) -> dict[str, Any] | None:
        """Start one call; its answer now when it is refused before any network."""
        method = arg.get("method") if isinstance(arg.get("method"), str) else "GET"
        url = arg.get("url") if isinstance(arg.get("url"), str) else ""
        call = _Call(call_id, method, url, time.monotonic(), len(self._summaries))
        self._summaries.append(None)
        try:
            self.started += 1
            if self.started > self.settings.max_requests:
                limit = self.settings.max_requests
                raise FetchError("too_many_requests", f"fetch: too many requests: a run may make {limit}")
            request = _request(arg)
        except FetchError as refused:
            return self._ended(call, refused)
        context = copy_context()
        context.run(connection.current.set, self.abort)
        future: Future = Future()
        self._pending[future] = call
        with self._lock:
            self._waiting.append((future, context, request))
        self._launch()
        return None

    def _launch(self) -> None:
        """Start waiting calls while fewer than max_in_flight of the run's are on the wire."""
        with self._lock:
            while self._waiting and self._running < self.settings.max_in_flight:
                future, context, request = self._waiting.popleft()
                self._running += 1
                _THREADS.submit(context.run, self._run_call, future, request)

    def _run_call(self, future: Future, request: client.Request) -> None:
        try:
            if future.set_running_or_notify_cancel():  # else cancelled while it waited
                try:
                    future.set_result(self._fetch(request))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            with self._lock:
                self._running -= 1
            self._launch()

    def _fetch(self, request: client.Request) -> client.Response:
        if self.abort.aborted:
            raise FetchError("aborted", "fetch: the run ended before the call was made")
        try:
            return client.fetch(request, self.settings, self.policy, self.deadline)
        except FetchError:
            raise
        except Exception as exc:
            # What an upstream answers is the tenant's to choose: a case the client did not
            # foresee fails this call, never the run's sandbox (every tenant's warm runtimes).
            log.warning("fetch: unexpected %s in the client", type(exc).__name__)  # its text may quote a secret
            raise FetchError("connection", f"fetch: the call failed ({type(exc).__name__})") from None

    def answers(self, block: bool, used: int = 0) -> list[dict[str, Any]]:
        """Answers of the calls that have ended, as many as fit beside `used` bytes of other
        answers in one batch (an answer alone in its batch always goes); with `block`, at least
        one if any is in flight, waiting for it no later than the run's deadline."""
        if not self._pending:
            return []
        if block:
            wait(list(self._pending), timeout=max(self.deadline - time.monotonic(), 0) + 1, return_when=FIRST_COMPLETED)
        out: list[dict[str, Any]] = []
        for future in [f for f in self._pending if f.done()]:
            call = self._pending[future]
            try:
                outcome: client.Response | FetchError = future.result()
            except FetchError as failed:
                outcome = failed
            answer = _answer(call.id, outcome)
            cost = channel_bytes(answer)
            if used and used + cost > MAX_ANSWERS_BYTES:
                break  # the rest go in a later batch
            del self._pending[future]
            self._record(call, outcome)
            out.append(answer)
            used += cost
        return out

    def cancel(self, call_id: int) -> None:
        """The script aborted the call: its answer is not wanted (the signal rejected it)."""
        for future, call in list(self._pending.items()):
            if call.id == call_id:
                del self._pending[future]
                future.cancel()
                self._record(call, FetchError("aborted", "fetch: aborted"))

    def close(self) -> None:
        """The run ended: calls still in flight are cut off, now."""
        self.abort.abort()
        for future, call in self._pending.items():
            future.cancel()
            self._record(call, FetchError("aborted", "fetch: the run ended first"))
        self._pending.clear()
        with self._lock:
            self._waiting.clear()

    def _ended(self, call: _Call, outcome: client.Response | FetchError) -> dict[str, Any]:
        self._record(call, outcome)
        return _answer(call.id, outcome)

    def _record(self, call: _Call, outcome: client.Response | FetchError) -> None:
        duration_ms = round((time.monotonic() - call.started) * 1000)
        self._summaries[call.slot] = client.summary(call.method, call.url, outcome, duration_ms)


def _answer(call_id: int, outcome: client.Response | FetchError) -> dict[str, Any]:
    if isinstance(outcome, FetchError):
        return {"id": call_id, "ok": False, "error": outcome.message}
    return {"id": call_id, "ok": True, "response": _as_js(outcome)}


def channel_bytes(answer: dict[str, Any]) -> int:
    """What an answer weighs on the sandbox channel: a fetch's response as the JSON it becomes,
    other answers' JSON text (`value`) about as it is escaped again."""
    if "response" in answer:
        return len(json.dumps(answer["response"])) + 64
    text = answer.get("value") or answer.get("error") or ""
    return len(text) + text.count("\\") + text.count('"') + 64


def _request(arg: dict[str, Any]) -> client.Request:
    """The call as the sandbox sent it (bootstrap.js checked the types; checked again here)."""
    url, method, body = arg.get("url"), arg.get("method", "GET"), arg.get("body")
    headers, redirect, timeout_ms = arg.get("headers") or [], arg.get("redirect", "follow"), arg.get("timeoutMs")
    if not isinstance(url, str) or not isinstance(method, str) or not isinstance(redirect, str):
        raise FetchError("bad_request", "fetch: url, method and redirect must be strings")
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers
    ):
        raise FetchError("bad_request", "fetch: headers must be name and value strings")
    if body is not None and not isinstance(body, str):
        raise FetchError("bad_request", "fetch: body must be a string")
    if timeout_ms is not None and (not isinstance(timeout_ms, int | float) or timeout_ms <= 0):
        raise FetchError("bad_request", "fetch: timeoutMs must be a positive number")
    encoded = body.encode("utf-8", "surrogatepass") if body is not None else None
    return client.Request(url, method, [(n, v) for n, v in headers], encoded, redirect, timeout_ms)


def _as_js(response: client.Response) -> dict[str, Any]:
    """What bootstrap.js builds the Response from: the body as text (decoded as UTF-8, as
    text() does). Sent as part of the answer, not as JSON text within it: escaped once."""
    return {
        "status": response.status,
        "statusText": response.status_text,
        "url": response.url,
        "redirected": response.redirected,
        "headers": response.headers,
        "body": response.body.decode("utf-8", "replace"),
    }
