"""One QuickJS runtime: the locked global object, a compile cache, and a run under limits.

Lives in the sandbox process (worker/runtime/host.py), never in the web or worker process.
The CPU budget is carried across the JS slices of a run (quickjs-ng restarts its time limit at
every call); the wall limit is enforced from outside, by the supervising worker.
"""

import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import quickjs

from worker.runtime.protocol import CLIP_MARK
from worker.runtime.source import PREFIX_LINES, check_syntax, function_body

_HERE = Path(__file__).parent
BOOTSTRAP = (_HERE / "bootstrap.js").read_text().replace("/* chacha20.js */", (_HERE / "chacha20.js").read_text())
MIN_STACK, MAX_STACK = 64 * 1024, 8 * 1024 * 1024  # 0 or very large values crash quickjs-ng
IDLE_MEMORY_BYTES = 256 * 1024 * 1024
MAX_ERROR_CHARS = 4096  # error messages are stored with every failed run
LOG_ENTRY_BYTES = 48  # what a log entry's time and level count against the cap, as in bootstrap.js
_FRAME = re.compile(r"at (\S+) \(<input>:(\d+):(\d+)\)")

# Takes [{id, op, arg}], returns [{id, ok, value (JSON text) | error (message)}].
HostCalls = Callable[[list[dict]], list[dict]]
# Yields host calls, is sent their answers, returns the run's outcome.
RunSteps = Generator[list[dict], list[dict], "RunOutcome"]


@dataclass(frozen=True)
class RunLimits:
    cpu_seconds: float
    memory_bytes: int
    log_bytes: int
    result_bytes: int


@dataclass
class RunOutcome:
    status: str  # succeeded | failed
    result_json: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
    logs: list[dict] = field(default_factory=list)
    cache_hit: bool = False
    cpu_ms: float = 0.0
    limit_hit: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # shallow: asdict() would deep-copy every log entry


class InvalidSource(Exception):
    pass


class _Limit(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Refused(_Limit):
    """Thrown into a run's steps in place of answers: the run ends as a failed `exception`
    with this message, its logs kept."""

    def __init__(self, message: str):
        super().__init__("exception", message)


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB"


class Runtime:
    """A QuickJS context with the host API installed and everything frozen."""

    def __init__(self, stack_bytes: int, cache_size: int = 64):
        self.id = os.urandom(4).hex()
        self.ctx = quickjs.Context()
        self.stack_bytes = min(max(stack_bytes, MIN_STACK), MAX_STACK)
        self.ctx.set_max_stack_size(self.stack_bytes)
        self._driver = self.ctx.eval(BOOTSTRAP)
        self._secret = os.urandom(24).hex()
        self._driver("init", self._secret)
        self.cache: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self.cache_size = cache_size
        self.runs = 0

    def driver(self, op: str, *args: Any) -> Any:
        return self._driver(op, self._secret, *args)

    def heap_used(self) -> int:
        # Walks the whole heap (~10 us): measured after compiles, not on every run.
        return int(self.ctx.memory()["memory_used_size"])

    def factory(self, script_id: str, version: int | None, source: str) -> tuple[Any, bool]:
        """The compiled script, from the cache when this version was compiled here before. A
        draft (version None) is compiled for its run only: neither read from the cache nor
        put in it, so it can never stand in for a saved version, nor one for it."""
        key = (script_id, version)
        cached = self.cache.get(key) if version is not None else None
        if cached is not None:
            self.cache.move_to_end(key)
            return cached, True
        problem = check_syntax(source, self.ctx)  # never compile a source that escapes its wrapper
        if problem is not None:
            raise InvalidSource(str(problem))
        compiled = self.driver("compile", function_body(source))
        if version is None:
            return compiled, False
        for old in [k for k in self.cache if k[0] == script_id]:
            del self.cache[old]  # a new version replaces the old one
        self.cache[key] = compiled
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return compiled, False

    def run(self, request: dict[str, Any], limits: RunLimits, host: HostCalls) -> RunOutcome:
        """One run from start to end, `host` answering its host calls as they come."""
        steps = self.steps(request, limits)
        try:
            calls = next(steps)
            while True:
                calls = steps.send(host(calls))
        except StopIteration as done:
            return done.value

    def steps(self, request: dict[str, Any], limits: RunLimits) -> "RunSteps":
        """One run, step by step: yields each batch of host calls it waits on and is sent
        their answers; returns its outcome. Between steps the runtime may run nothing else
        (its job queue and run state belong to this run), but the process may drive other
        runtimes' runs: the CPU budget counts this run's own slices only."""
        self.runs += 1
        budget = _CpuBudget(self.ctx, limits.cpu_seconds)
        outcome = RunOutcome(status="failed")
        heap = 0  # measured once the script is compiled
        try:
            try:
                factory, outcome.cache_hit = budget.slice(
                    self.factory, request["script_id"], request["version"], request["source"]
                )
            except InvalidSource as exc:
                outcome.error_kind, outcome.error_message = "syntax", str(exc)
                return outcome
            # The limit is set above what this runtime holds as the run starts (code, caches).
            heap = self.heap_used()
            self.ctx.set_memory_limit(heap + limits.memory_bytes)
            setup = {"context": request["context"], "logCap": limits.log_bytes, "seed": _seed()}
            budget.slice(self.driver, "begin", json.dumps(setup), factory, request["event_json"])
            finished = yield from self._drive(budget)
            self._settle_outcome(outcome, finished, limits, request["source"])
            self._drain_leftovers_or_recycle(budget, outcome)
        except _Limit as hit:
            outcome.error_kind, outcome.error_message = hit.kind, str(hit)
            outcome.limit_hit = hit.kind != "exception"
            self._collect_logs(outcome, limits)
        except (quickjs.JSException, quickjs.StackOverflow) as exc:
            outcome.error_kind, outcome.error_message = self._classify(exc, limits)
            outcome.limit_hit = outcome.error_kind != "exception"
            self._collect_logs(outcome, limits)
            if not outcome.limit_hit:
                self._drain_leftovers_or_recycle(budget, outcome)
        finally:
            outcome.cpu_ms = round(budget.used * 1000, 3)
            self.ctx.set_time_limit(-1)
            self.ctx.set_memory_limit(heap + IDLE_MEMORY_BYTES)  # no run's limit lingers
        return outcome

    def _drive(self, budget: "_CpuBudget") -> Generator[list[dict], list[dict], dict]:
        """Run pending jobs; hand the queued host calls out (yield) and settle their answers;
        until main's promise settles."""
        while True:
            while budget.slice(self.ctx.execute_pending_job):
                pass
            state = json.loads(budget.slice(self.driver, "poll"))
            if state.get("done"):
                return state
            if not state["calls"] and not state.get("waiting"):
                raise _Limit("exception", "main's promise never settled (nothing left to wait for)")
            answers = yield state["calls"]
            budget.slice(self.driver, "settle", json.dumps(answers))

    def _drain_leftovers(self, budget: "_CpuBudget") -> None:
        """Run the jobs a finished run left queued (a toJSON called while its result was
        serialised may queue some), now, with no run state: left for later, they would run
        inside the next run, with the next run's context and storage, maybe another tenant's.
        They count against this run's CPU budget."""
        while True:
            try:
                if not budget.slice(self.ctx.execute_pending_job):
                    return
            except (quickjs.JSException, quickjs.StackOverflow):
                continue  # a leftover job threw: nothing of this run is left to report it to

    def _drain_leftovers_or_recycle(self, budget: "_CpuBudget", outcome: RunOutcome) -> None:
        try:
            self._drain_leftovers(budget)
        except _Limit:
            outcome.limit_hit = True  # a runtime with jobs still queued is never used again

    def _settle_outcome(self, outcome: RunOutcome, finished: dict, limits: RunLimits, source: str) -> None:
        outcome.logs = _with_drop_notice(finished["logs"], finished["logDropped"], limits.log_bytes)
        if finished["ok"]:
            size = len(finished["value"].encode())
            if size > limits.result_bytes:
                outcome.error_kind = "result_too_large"
                outcome.error_message = (
                    f"result limit {limits.result_bytes // 1024} KiB exceeded (the result is {size / 1024:.0f} KiB)"
                )
                return
            outcome.status, outcome.result_json = "succeeded", finished["value"]
            return
        error = finished["error"]
        kind = _error_kind(f"{error['name']}: {error['message']}")
        outcome.error_kind = kind
        outcome.limit_hit = kind != "exception"
        if kind == "exception":
            name, message = _clip(error["name"], 200), _clip(error["message"], MAX_ERROR_CHARS)
            outcome.error_message = f"{name}: {message}{_location(error['stack'], source)}"
        else:
            outcome.error_message = _limit_message(kind, limits, self.stack_bytes)

    def _classify(self, exc: Exception, limits: RunLimits) -> tuple[str, str]:
        text = str(exc)
        if isinstance(exc, quickjs.StackOverflow):
            return "stack_overflow", _limit_message("stack_overflow", limits, self.stack_bytes)
        if "interrupted" in text.split("\n", 1)[0]:
            return "timeout", f"CPU time limit {limits.cpu_seconds:g} s exceeded"
        kind = _error_kind(text)
        if kind == "exception":
            return kind, _clip(text.split("\n", 1)[0], MAX_ERROR_CHARS)
        return kind, _limit_message(kind, limits, self.stack_bytes)

    def _collect_logs(self, outcome: RunOutcome, limits: RunLimits) -> None:
        """After an aborted run: keep what was logged, and leave no run state behind."""
        try:
            self.ctx.set_time_limit(-1)
            left = json.loads(self.driver("abandon"))
            outcome.logs = _with_drop_notice(left["logs"], left["logDropped"], limits.log_bytes)
        except (quickjs.JSException, quickjs.StackOverflow):
            pass


class _CpuBudget:
    """One CPU budget shared by every JS slice of a run."""

    def __init__(self, ctx: quickjs.Context, seconds: float):
        self.ctx = ctx
        self.seconds = seconds
        self.used = 0.0

    def slice(self, fn: Callable, *args: Any) -> Any:
        remaining = self.seconds - self.used
        if remaining <= 0:
            raise _Limit("timeout", f"CPU time limit {self.seconds:g} s exceeded")
        self.ctx.set_time_limit(remaining)
        started = time.process_time()
        try:
            return fn(*args)
        finally:
            self.used += time.process_time() - started
            self.ctx.set_time_limit(-1)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"{CLIP_MARK} ({len(text) - limit} more characters)"


def _seed() -> list[int]:
    """Ten words from the OS for one run: eight key crypto's ChaCha20, two seed Math.random."""
    raw = os.urandom(40)
    return [int.from_bytes(raw[i : i + 4], "little") for i in range(0, 40, 4)]


def _error_kind(text: str) -> str:
    first = text.split("\n", 1)[0]
    if "out of memory" in first or "string too long" in first or first.endswith(": null") or first == "null":
        return "memory"
    if "Maximum call stack size exceeded" in first:
        return "stack_overflow"
    if "interrupted" in first and first.startswith("InternalError"):
        return "timeout"
    return "exception"


def _limit_message(kind: str, limits: RunLimits, stack_bytes: int) -> str:
    if kind == "memory":
        return f"memory limit {_mib(limits.memory_bytes)} exceeded"
    if kind == "stack_overflow":
        return f"stack limit {stack_bytes // 1024} KiB exceeded (recursion too deep)"
    return f"CPU time limit {limits.cpu_seconds:g} s exceeded"


def _location(stack: str, source: str) -> str:
    """' (line L, column C)' of the first stack frame in the script's own code."""
    for name, line, column in _FRAME.findall(stack or ""):
        if name.startswith("__sr_"):
            continue
        mapped = int(line) - PREFIX_LINES
        if 1 <= mapped <= source.count("\n") + 1:
            return f" (line {mapped}, column {column})"
    return ""


def _with_drop_notice(logs: list[dict], dropped: int, cap: int) -> list[dict]:
    """The run's logs within the cap, counted here as well as in the engine (a cap kept only
    inside the engine would be the script's to lift), with a last line saying what was dropped."""
    kept, size = [], 0
    for entry in logs:
        size += len(str(entry.get("message")).encode("utf-8", "surrogatepass")) + LOG_ENTRY_BYTES
        if size > cap:
            dropped += len(logs) - len(kept)
            break
        kept.append(entry)
    if dropped:
        plural = "s" if dropped != 1 else ""
        kept.append(
            {
                "time": kept[-1]["time"] if kept else None,
                "level": "warn",
                "message": f"log limit {cap // 1024} KiB reached: {dropped} later log line{plural} dropped",
            }
        )
    return kept
