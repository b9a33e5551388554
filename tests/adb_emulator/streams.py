"""One host connection to the emulated device: the CNXN/AUTH handshake and OPEN/OKAY/WRTE/CLSE streams."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from collections.abc import Callable

from adb_emulator.wire import (
    AUTH,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    CLSE,
    CNXN,
    MAX_PAYLOAD,
    OKAY,
    OPEN,
    VERSION,
    WRTE,
    pack,
    read_message,
)


class Stream:
    """One OPENed service. `write` waits for the host's OKAY of the previous WRTE (adb flow control)."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.acked = threading.Event()
        self.acked.set()
        self.closed = threading.Event()
        self._write_lock = threading.Lock()

    def accept(self) -> None:
        self.conn.send(OKAY, self.local_id, self.remote_id)

    def write(self, data: bytes) -> None:
        """Send `data` in WRTE packets of at most the negotiated payload; ConnectionError once closed."""
        with self._write_lock:
            for start in range(0, len(data), self.conn.max_payload):
                self.acked.wait()
                if self.closed.is_set():
                    raise ConnectionError("stream closed")
                self.acked.clear()
                self.conn.send(WRTE, self.local_id, self.remote_id, data[start : start + self.conn.max_payload])

    def read(self) -> bytes | None:
        """The next payload the host wrote, None once the host closed the stream."""
        return self.inbox.get()

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.conn.streams.pop(self.local_id, None)
            self.conn.send(CLSE, self.local_id, self.remote_id)

    def host_closed(self) -> None:
        self.closed.set()
        self.acked.set()
        self.inbox.put(None)


Service = Callable[[Stream, str], None]


class Connection:
    """Reads messages from one host socket and dispatches them; `service(stream, destination)` runs per OPEN."""

    def __init__(self, sock: socket.socket, banner: bytes, service: Service, refuse_auth: bool = False):
        self.sock, self.banner, self.service, self.refuse_auth = sock, banner, service, refuse_auth
        self.streams: dict[int, Stream] = {}
        self.max_payload = MAX_PAYLOAD
        self._send_lock = threading.Lock()
        self._next_id = 0

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self._send_lock, contextlib.suppress(OSError):  # the host is gone; the reader loop notices
            self.sock.sendall(pack(command, arg0, arg1, data))

    def serve(self) -> None:
        try:
            while (message := read_message(self.sock)) is not None:
                self._dispatch(*message)
        except OSError:
            pass
        self.drop()

    def drop(self) -> None:
        """Hang up on the host (also the fault injection for a cable pulled mid-run)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for stream in list(self.streams.values()):
            stream.host_closed()
        self.streams.clear()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command in (CNXN, AUTH):
            self._handshake(command, arg0, arg1)
        elif command == OPEN:
            self._next_id += 1
            stream = Stream(self, self._next_id, arg0)
            self.streams[stream.local_id] = stream
            destination = data.rstrip(b"\0").decode()
            threading.Thread(target=self.service, args=(stream, destination), daemon=True).start()
        elif command == OKAY and arg1 in self.streams:
            self.streams[arg1].acked.set()
        elif command == WRTE and arg1 in self.streams:
            self.send(OKAY, arg1, arg0)
            self.streams[arg1].inbox.put(data)
        elif command == CLSE and arg1 in self.streams:
            self.streams.pop(arg1).host_closed()

    def _handshake(self, command: int, arg0: int, max_payload: int) -> None:
        """CNXN is answered directly. An unauthorized device rejects each signature with a new token and,
        once the host offers its public key, says nothing (the phone would show the RSA prompt)."""
        if self.refuse_auth:
            if command == CNXN or arg0 == AUTH_SIGNATURE:
                self.send(AUTH, AUTH_TOKEN, 0, os.urandom(20))
        elif command == CNXN:
            self.max_payload = min(max_payload, MAX_PAYLOAD)
            self.send(CNXN, VERSION, MAX_PAYLOAD, self.banner)
