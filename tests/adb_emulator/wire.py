"""The adb wire format: 24-byte little-endian message headers (command, arg0, arg1, length, checksum, magic)."""

from __future__ import annotations

import socket
import struct


def _command(name: bytes) -> int:
    return int.from_bytes(name, "little")


CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = map(_command, (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))
VERSION = 0x01000001  # "skip checksum" protocol version
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE = 1, 2  # AUTH arg0; 3 = the host's RSA public key
HEADER = struct.Struct("<6I")


def pack(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One message: header then payload (checksum filled in for old hosts)."""
    return HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF) + data


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def read_message(sock: socket.socket) -> tuple[int, int, int, bytes] | None:
    """(command, arg0, arg1, payload), or None when the host hung up."""
    header = _read_exact(sock, HEADER.size)
    if header is None:
        return None
    command, arg0, arg1, length, _checksum, magic = HEADER.unpack(header)
    if magic != command ^ 0xFFFFFFFF:
        return None
    data = _read_exact(sock, length) if length else b""
    return None if data is None else (command, arg0, arg1, data)
