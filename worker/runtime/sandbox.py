"""The worker's side of the sandbox: supervises one sandbox process, in which several runs may
be in flight, each driven by a thread of the worker calling `Sandbox.run`.

quickjs-ng cannot interrupt JS that sits inside a long built-in (JSON.parse of a huge string),
and a Python thread cannot interrupt C code, so the wall-time limit (and CPU and memory
backstops read from /proc) are enforced here by killing the sandbox process and starting a
fresh one.

The process answers every message with exactly one reply, in order (worker/runtime/host.py),
so the run it is busy with is the one whose message has waited longest for its reply: the
head of `_sent`. Only that run can pass a backstop, and only for it is the process killed.
A run whose wall time passes while it waits (on the worker's answers, or behind another run)
is cancelled where it stands, harming no one. The other runs of a killed process run again
in a fresh one (as often as that happens while their wall time lasts): none is lost, none is
reported as the culprit's failure.
"""

import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from webapp.config import PROJECT_ROOT
from webapp.limits import EffectiveLimits
from worker.runtime import protocol

log = logging.getLogger(__name__)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_POLL_SECONDS = 0.2
CPU_GRACE_SECONDS = 1.0  # the engine's own interrupt normally ends a run first
MEMORY_GRACE_BYTES = 64 * 1024 * 1024  # likewise the engine's memory limit, for the RSS backstop
MAX_STARTS = 10  # of one run, each time its process was killed for another run's limit
ABANDONED_GRACE_SECONDS = 1.0  # a run given up, still computing this long once at the head, is ended


HostHandler = Callable[[list[dict]], list[dict]]


class _Restarted(Exception):
    """The process ended while the run was in flight, not for the run's own sake."""


class Sandbox:
    """One sandbox process, replaced whenever it has to be killed or dies."""

    def __init__(self, stack_bytes: int, max_runs: int, heap_limit: int, tenants: int = 64):
        self.hello = {
            "op": "hello",
            "stack_bytes": stack_bytes,
            "max_runs": max_runs,
            "heap_limit": heap_limit,
            "tenants": tenants,
        }
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._state = threading.RLock()  # the fields below; never held while writing to the pipe
        self._writing = threading.Lock()  # one message at a time, in the order of `_sent`
        self._replies: dict[str, queue.Queue] = {}  # run id -> its replies; None: the process ended
        self._sent: deque[str] = deque()  # the run of each message without a reply yet, in order
        self._head_usage = (0.0, 0)  # the process's CPU and RSS when the head's message became it
        self._head_since = 0.0  # time.monotonic() then
        self._tenant_of: dict[str, Any] = {}  # run id -> its tenant, while the run is known
        self._ended_for: Any = None  # the tenant of the run the process was last killed for
        self._culprits: dict[str, dict[str, Any]] = {}  # run id -> its outcome: killed for its sake
        self._abandoned: set[str] = set()  # runs given up while their message was in the process
        self._recycled_seen = 0  # the process's count of replaced runtimes at its last run's end

    @property
    def busy(self) -> bool:
        return bool(self._replies)

    # -- process lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(PROJECT_ROOT), "LANG": "C.UTF-8"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.runtime.host"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(PROJECT_ROOT),
            env=env,
        )
        try:
            protocol.send(proc.stdin.fileno(), self.hello)
            ready = protocol.receive(proc.stdout.fileno())
        except (protocol.ChannelClosed, OSError):
            ready = None
        if ready is None or ready.get("op") != "ready":
            _end(proc)
            proc.stdin.close()
            proc.stdout.close()
            raise RuntimeError("the sandbox process did not start")
        with self._state:
            self.proc = proc
        threading.Thread(target=self._read, args=(proc,), name="sandbox-replies", daemon=True).start()

    def _started(self) -> subprocess.Popen:
        with self._state:
            if self.proc is not None and self.proc.poll() is not None:  # before its reader saw it
                self.kill(self._blame_the_head(self.proc, f"exit code {self.proc.returncode}"))
            if self.proc is None:
                self.start()
            assert self.proc is not None
            return self.proc

    def kill(self, ended_for: Any = None) -> None:
        """End the process; every run in flight in it is told (None). `ended_for`: the tenant of
        the run it was ended for, if any: that tenant's other runs in it are not started again."""
        with self._state:
            self._ended_for = ended_for
            self._tenant_of = {run: tenant for run, tenant in self._tenant_of.items() if run in self._replies}
            if self.proc is not None:
                _end(self.proc)
                threading.Thread(target=self._close_stdin, args=(self.proc,), daemon=True).start()
                self.proc = None
            self._sent.clear()
            self._abandoned.clear()
            self._recycled_seen = 0
            for replies in self._replies.values():
                replies.put(None)

    def _close_stdin(self, proc: subprocess.Popen) -> None:
        """Closed between messages only: a writer may be sending to the process as it is
        killed, and a descriptor closed under it could be reused (a fetch's socket, the next
        process's pipe) and receive the rest of the message."""
        with self._writing:
            proc.stdin.close()

    def close(self) -> None:
        self.kill()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _read(self, proc: subprocess.Popen) -> None:
        """Each reply of the process to its run, until the process ends. This thread alone
        closes the process's stdout: closed from elsewhere while read here, its descriptor
        could be reused by the next process's pipe and read here."""
        try:
            self._read_replies(proc)
        finally:
            proc.stdout.close()

    def _read_replies(self, proc: subprocess.Popen) -> None:
        fd = proc.stdout.fileno()
        while True:
            try:
                message = protocol.receive(fd)
            except (protocol.ChannelClosed, OSError, ValueError) as exc:
                with self._state:
                    if self.proc is proc:  # it died on its own
                        self.kill(self._blame_the_head(proc, exc))
                return
            run_id = message.get("run")
            with self._state:
                if self.proc is not proc:
                    return
                self._sent.popleft()
                if self._sent:
                    self._head_usage, self._head_since = self._cpu_and_rss(), time.monotonic()
                abandoned = run_id in self._abandoned
                if message.get("op") == "done":
                    if run_id in self._abandoned:
                        self._abandoned.discard(run_id)
                        self._tenant_of.pop(run_id, None)
                    message["recycled"] = self._recycled_since(message.get("runtimes_recycled", 0))
                replies = self._replies.get(run_id)
            if abandoned:
                if message.get("op") == "host":  # not from this thread: it must keep draining replies
                    threading.Thread(target=self._send, args=(proc, run_id, {"op": "cancel", "run": run_id})).start()
            elif replies is not None:
                replies.put(message)

    def _recycled_since(self, total: int) -> int:
        """Runtimes the process replaced since its last reply of a run's end."""
        seen, self._recycled_seen = self._recycled_seen, total
        return total - seen if total >= seen else total

    def _blame_the_head(self, proc: subprocess.Popen, exc: Exception | str) -> Any:
        """The process ended, or spoke past the protocol, while busy with the head's message:
        that run fails, and is not run again (it would end the process again, and every run
        in flight with it); the others run again."""
        log.warning("the sandbox process died (exit %s): %s", proc.poll(), exc)
        if self._sent and self._sent[0] in self._replies:
            self._culprits[self._sent[0]] = _failure("exception", "the sandbox process died during the run")
        return self._tenant_of.get(self._sent[0]) if self._sent else None

    def _send(self, proc: subprocess.Popen, run_id: str, message: dict[str, Any]) -> None:
        """TooLarge, before anything is sent, for a message the process would refuse (and end)."""
        data = protocol.encode(message)
        with self._writing:
            with self._state:
                if self.proc is not proc:
                    raise _Restarted()
                if not self._sent:
                    self._head_usage, self._head_since = self._cpu_and_rss(), time.monotonic()
                self._sent.append(run_id)
            try:
                protocol.write(proc.stdin.fileno(), data)
            except OSError:
                raise _Restarted() from None  # the reader tells everyone

    def _cpu_and_rss(self) -> tuple[float, int]:
        """CPU seconds and resident bytes of the sandbox process, from /proc."""
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, int(fields[21]) * _PAGE_BYTES
        except (OSError, IndexError, ValueError, TypeError):
            return 0.0, 0

    # -- one run --------------------------------------------------------------------------
    def run(self, request: dict[str, Any], limits: EffectiveLimits, host: HostHandler) -> dict[str, Any]:
        started = time.monotonic()
        for attempt in range(1, MAX_STARTS + 1):
            run_id = uuid.uuid4().hex
            replies: queue.Queue = queue.Queue()
            proc = self._started()  # before the run is known: replacing a dead process tells all known
            with self._state:
                self._replies[run_id] = replies
                self._tenant_of[run_id] = request["tenant_id"]
            try:
                return self._run_once(proc, run_id, replies, request, limits, host, started)
            except _Restarted:
                if self._ended_for == request["tenant_id"]:
                    # Ended for a run of its own tenant: started again, it would get its budgets
                    # afresh, so a tenant could lift its own limits by killing its own process.
                    return _failure("exception", "the sandbox process was ended for another run of this tenant")
                # Restarted for other runs' limits: started again while its wall time lasts (a
                # neighbour tripping backstops again and again must not fail it sooner).
                if attempt == MAX_STARTS or time.monotonic() - started >= limits.wall_seconds:
                    message = f"the sandbox process was restarted {attempt} times during the run for other runs"
                    return _failure("exception", message)
                log.info("run %s starts again: its sandbox process was restarted for another run", run_id)
                start_over = getattr(host, "start_over", None)  # the worker's HostApi
                if start_over is not None:
                    start_over()
            except protocol.TooLarge as exc:  # the run's own message: nothing was sent
                return _failure("exception", f"the run is too large for the sandbox: {exc}")
            except BaseException:
                self.kill()  # e.g. RQ's job-timeout alarm: never leave a run going in the sandbox
                raise
            finally:
                with self._state:
                    self._replies.pop(run_id, None)
                    self._culprits.pop(run_id, None)
                    if run_id not in self._abandoned:  # its tenant is wanted until its message is done
                        self._tenant_of.pop(run_id, None)
        raise AssertionError("unreachable")

    def _run_once(
        self,
        proc: subprocess.Popen,
        run_id: str,
        replies: queue.Queue,
        request: dict[str, Any],
        limits: EffectiveLimits,
        host: HostHandler,
        started: float,
    ) -> dict[str, Any]:
        deadline = started + limits.wall_seconds
        self._send(proc, run_id, {"op": "run", "run": run_id, **request, "limits": limits.for_engine()})
        while True:
            try:
                message = replies.get(timeout=max(min(deadline - time.monotonic(), _POLL_SECONDS), 0.001))
            except queue.Empty:
                given_up = self._held_to_limits(proc, run_id, limits, started)
                if given_up is not None:
                    return given_up
                continue
            if message is None:
                with self._state:
                    mine = self._culprits.get(run_id)
                if mine is not None:
                    return mine
                raise _Restarted()  # for another run's sake, or it died
            if message["op"] == "host":
                answers = host(message["calls"])
                if time.monotonic() >= deadline:  # its wall time passed while it was answered
                    # Its reply is a "done", dropped once the run is gone: nothing to mark (marked
                    # after the send, a reply read first would leave its id in `_abandoned`).
                    self._send(proc, run_id, {"op": "cancel", "run": run_id})
                    return _timed_out(limits, started)
                try:
                    self._send(proc, run_id, {"op": "answers", "run": run_id, "answers": answers})
                except protocol.TooLarge:
                    self._send(proc, run_id, {"op": "cancel", "run": run_id})
                    limit = protocol.MAX_MESSAGE // 1024 // 1024
                    outcome = _failure(
                        "exception", f"the answers to the run's host calls are over the {limit} MiB channel limit"
                    )
                    outcome["wall_ms"] = round((time.monotonic() - started) * 1000, 3)
                    return outcome
                continue
            message["wall_ms"] = round((time.monotonic() - started) * 1000, 3)
            return message

    def _held_to_limits(
        self, proc: subprocess.Popen, run_id: str, limits: EffectiveLimits, started: float
    ) -> dict[str, Any] | None:
        """The run's outcome once it passed a limit while its message was in the process, else
        None. The run the process is busy with is ended by ending the process (its outcome
        comes with the process's end); one waiting behind others is given up where it stands."""
        with self._state:
            if self.proc is not proc or run_id not in self._sent:
                return None  # the process ended: the reader tells this run
            now = time.monotonic()
            head = self._sent[0]
            if head in self._abandoned and now - self._head_since > ABANDONED_GRACE_SECONDS:
                # Given up by its thread (its wall time passed while it waited), it computes on
                # with no thread to hold it to its limits: only ending the process stops it.
                self.restarts += 1
                self.kill(self._tenant_of.get(head))
                return None
            if head != run_id:
                if now - started < limits.wall_seconds:
                    return None
                self._abandoned.add(run_id)  # its reply, when it comes, is answered with a cancel
                return _timed_out(limits, started)
            cpu, rss = self._cpu_and_rss()
            cpu_used, grown = cpu - self._head_usage[0], rss - self._head_usage[1]
            if grown > limits.memory_bytes + MEMORY_GRACE_BYTES:
                outcome = _failure("memory", f"memory limit {limits.memory_bytes / 1024 / 1024:g} MiB exceeded")
            elif cpu_used > limits.cpu_seconds + CPU_GRACE_SECONDS:
                message = f"CPU time limit {limits.cpu_seconds:g} s exceeded (used {cpu_used:.1f} s)"
                outcome = _failure("timeout", message)
            elif now - started >= limits.wall_seconds:
                outcome = _timed_out(limits, started)
            else:
                return None
            outcome.update(wall_ms=round((now - started) * 1000, 3), cpu_ms=round(cpu_used * 1000, 3))
            self._culprits[run_id] = outcome
            self.restarts += 1
            self.kill(self._tenant_of.get(run_id))
        return None


def _end(proc: subprocess.Popen) -> None:
    """Kill the process; its stdout is left to its reader thread to close, its stdin to
    whoever holds `_writing`."""
    proc.kill()
    proc.wait()


def _timed_out(limits: EffectiveLimits, started: float) -> dict[str, Any]:
    outcome = _failure("timeout", f"wall time limit {limits.wall_seconds:g} s exceeded")
    outcome["wall_ms"] = round((time.monotonic() - started) * 1000, 3)
    return outcome


def _failure(kind: str, message: str) -> dict[str, Any]:
    return {
        "op": "done",
        "status": "failed",
        "result_json": None,
        "error_kind": kind,
        "error_message": message,
        "logs": [],
        "cache_hit": False,
        "cpu_ms": 0.0,
        "limit_hit": True,
        "runtime_id": None,
        "runtime_runs": 0,
        "runtimes_recycled": 0,
        "recycled": 1,  # the process was killed (or the run never reached one): its runtimes go
    }
