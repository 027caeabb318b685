"""Messages between a worker and its sandbox process: 4-byte length, then JSON."""

import json
import os
import struct
from typing import Any

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024
# Where the sandbox cut a text short ("… (n more characters)" follows): a secret value cut
# there leaves its beginning before it, which worker/redaction.py looks for.
CLIP_MARK = "…"


class ChannelClosed(Exception):
    pass


class TooLarge(Exception):
    pass


def encode(message: dict[str, Any]) -> bytes:
    """The message as sent; TooLarge past MAX_MESSAGE (the other side would refuse it)."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise TooLarge(f"a message of {len(data)} bytes is over the {MAX_MESSAGE} byte limit")
    return _HEADER.pack(len(data)) + data


def send(fd: int, message: dict[str, Any]) -> None:
    write(fd, encode(message))


def write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exactly(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise ChannelClosed("the other side closed the channel")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive(fd: int) -> dict[str, Any]:
    (size,) = _HEADER.unpack(read_exactly(fd, _HEADER.size))
    if size > MAX_MESSAGE:
        raise ChannelClosed(f"message of {size} bytes is over the {MAX_MESSAGE} byte limit")
    return json.loads(read_exactly(fd, size))
