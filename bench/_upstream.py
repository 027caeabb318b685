"""The loopback upstream the fetch benchmarks call: a raw asyncio HTTP/1.1 responder in a
process of its own, answering `/now` at once and `/slow` after a delay, and the endpoint
script that fetches it (FETCHING % "'<url>'").

Not a benchmark itself: `make bench` runs the bench/*.py files whose names do not start with _.
"""

import asyncio
import multiprocessing
import re
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import c_ulonglong

from tests.services import free_port, wait_for_port

ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")
FETCHING = """async function main() {
  const r = await fetch(%s);
  if (!r.ok) throw new Error('upstream answered ' + r.status);
  return { body: await r.json() };
}"""


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, served) -> None:
    """Requests of one keep-alive connection, each answered in turn, `/slow` after `delay` s."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if length := _CONTENT_LENGTH.search(head):
                await reader.readexactly(int(length.group(1)))
            if head.startswith(b"GET /slow "):
                await asyncio.sleep(delay)
            writer.write(ANSWER)
            served.value += 1
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve(port: int, delay: float, served) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _answer(r, w, delay, served), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextmanager
def upstream(delay: float) -> Iterator[tuple[str, int, c_ulonglong]]:
    """The upstream in a process of its own: (its origin, its pid, the count of answers sent)."""
    port, served = free_port(), multiprocessing.RawValue("Q", 0)  # written by that process alone
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(port, delay, served), daemon=True)
    process.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", process.pid, served
    finally:
        process.terminate()
        process.join(timeout=10)
