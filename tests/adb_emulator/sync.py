"""The `sync:` service: STAT (v1), STA2/LST2 (v2), SEND/DATA/DONE (push), RECV (pull), QUIT. Requests span WRTE
packets."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

from adb_emulator.streams import Stream

STAT_V1 = struct.Struct("<III")  # mode, size, mtime
STAT_V2 = struct.Struct("<IQQIIIIQqqq")  # error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
MAX_DATA = 64 * 1024


class Reader:
    """Exact-size reads over the stream's WRTE payloads."""

    def __init__(self, stream: Stream):
        self.stream, self.buffer = stream, bytearray()

    def take(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = self.stream.read()
            if chunk is None:
                return None
            self.buffer += chunk
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def request(self) -> tuple[bytes, int] | None:
        head = self.take(8)
        return None if head is None else (head[:4], int.from_bytes(head[4:], "little"))


def stat_reply(kind: bytes, path: Path) -> bytes:
    """STAT v1 (zeros when missing) or STA2/LST2 (errno when missing)."""
    try:
        st = path.lstat() if kind in (b"STAT", b"LST2") else path.stat()
    except OSError as exc:
        return b"STAT" + STAT_V1.pack(0, 0, 0) if kind == b"STAT" else kind + STAT_V2.pack(exc.errno, *[0] * 10)
    if kind == b"STAT":
        return kind + STAT_V1.pack(st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
    times = int(st.st_atime), int(st.st_mtime), int(st.st_ctime)
    fields = (0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size, *times)
    return kind + STAT_V2.pack(*fields)


def _status(message: str = "") -> bytes:
    return b"OKAY" + bytes(4) if not message else b"FAIL" + len(message).to_bytes(4, "little") + message.encode()


def receive_file(reader: Reader, target: Path, mode: int) -> bytes | None:
    """DATA chunks until DONE(mtime) → the file written with its mode and mtime; OKAY/FAIL, None on hang-up."""
    data = bytearray()
    while (request := reader.request()) is not None:
        kind, length = request
        if kind == b"DONE":
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bytes(data))
                os.chmod(target, mode & 0o7777)
                os.utime(target, (length, length))
            except OSError as exc:
                return _status(f"{exc.strerror or errno.errorcode.get(exc.errno, 'error')}")
            return _status()
        chunk = reader.take(length) if kind == b"DATA" and length <= MAX_DATA else None
        if chunk is None:
            return None if kind == b"DATA" else _status("bad sync request")
        data += chunk
    return None


def send_file(source: Path) -> bytes:
    """RECV as adbd answers it: the file in DATA chunks of at most MAX_DATA, then DONE; `open failed: <strerror>`
    when it cannot be read."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        return _status(f"open failed: {exc.strerror}")
    chunks = [data[i : i + MAX_DATA] for i in range(0, len(data), MAX_DATA)]
    return b"".join(b"DATA" + len(c).to_bytes(4, "little") + c for c in chunks) + b"DONE" + bytes(4)


def run_sync(stream: Stream, to_local: Callable[[str], Path]) -> None:
    """Serve sync requests until QUIT or hang-up; `to_local` maps a device path into the sandbox."""
    stream.accept()
    reader = Reader(stream)
    try:
        while (request := reader.request()) is not None and request[0] != b"QUIT":
            kind, length = request
            path = reader.take(length)
            if path is None:
                break
            if kind in (b"STAT", b"STA2", b"LST2"):
                stream.write(stat_reply(kind, to_local(path.decode())))
            elif kind == b"SEND":
                name, _, mode = path.decode().rpartition(",")
                reply = receive_file(reader, to_local(name), int(mode))
                if reply is None:
                    break
                stream.write(reply)
            elif kind == b"RECV":
                stream.write(send_file(to_local(path.decode())))
            else:
                stream.write(_status(f"unsupported sync request {kind!r}"))
                break
    except ConnectionError:
        pass
    stream.close()
