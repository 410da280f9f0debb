"""Marks: a guest names a moment of its run, and the log records it in order with the I/O.

While a recorder or a trace is on, the front end starts a MarkServer: a unix stream socket
in a private directory (mode 0700), whose path it puts in the environment as $UBDSIM_MARK
before the guest starts (under `ubdsim run` the guest is a host process and inherits it).
`ubdsim mark NAME` connects, sends one line `mark NAME`, and waits for the answer
`ok N` (N: the host writes recorded before the mark) or `error TEXT`. Because it waits, the
mark is ordered: every request the guest completed before running `ubdsim mark` is before it
in the log, every request the guest starts after `ubdsim mark` returned is after it. (Under
`ubdsim run` guest writes reach the host file when the write() returns: ubdsim keeps no
dirty pages, see harness/pagecache.py; so a file the guest copies right after a mark holds
exactly the host writes before the mark.)

Names: 1 to 64 characters from letters, digits and `_.:-`, starting with a letter or `_`
(so that `--upto 12` is always a number and `--upto m12` a mark); `start`, `end` and `last`
are reserved; a name can be set once per log.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable

ENV = "UBDSIM_MARK"
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
RESERVED = frozenset({"start", "end", "last"})
LINE_MAX = 256


def check_name(name: str) -> str | None:
    """Why `name` cannot be a mark (None: it can)."""
    if not NAME_RE.fullmatch(name):
        return ("a mark name is 1 to 64 characters (letters, digits, _ . : -), starting with "
                "a letter or _")
    if name in RESERVED:
        return f"'{name}' is reserved (start, end and last name positions of every log)"
    return None


class MarkServer:
    """Accepts `mark NAME` lines on a private unix socket; `on_mark(name)` records one and
    returns the host-write count (or raises ValueError with the reason to refuse it)."""

    def __init__(self, on_mark: Callable[[str], int]) -> None:
        self.on_mark = on_mark
        self.directory = tempfile.mkdtemp(prefix="ubdsim-mark-")
        self.path = os.path.join(self.directory, "mark.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = os.pipe()
        try:
            self._sock.bind(self.path)
            self._sock.listen(16)
        except BaseException:
            self._cleanup()
            raise
        self._thread = threading.Thread(target=self._serve, name="ubdsim-mark", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = b""
        try:
            while b"\n" not in data and len(data) < LINE_MAX:
                chunk = conn.recv(LINE_MAX)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return
        line = data.split(b"\n", 1)[0].decode("utf-8", "replace")
        verb, _, name = line.partition(" ")
        if verb != "mark":
            reply = "error expected 'mark NAME'"
        elif (problem := check_name(name)) is not None:
            reply = f"error {problem}"
        else:
            try:
                reply = f"ok {self.on_mark(name)}"
            except ValueError as err:
                reply = f"error {err}"
        try:
            conn.sendall(reply.encode() + b"\n")
        except OSError:
            pass

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class MarkError(Exception):
    """`ubdsim mark` could not set the mark (the text says why)."""


def send_mark(name: str, path: str, timeout: float = 30.0) -> int:
    """Set mark `name` through the server at `path`; returns the host-write count."""
    problem = check_name(name)
    if problem is not None:
        raise MarkError(problem)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as err:
            raise MarkError(f"cannot reach the recorder at ${ENV}={path}: {err.strerror or err} "
                            "(is the run that set it still going?)") from None
        sock.sendall(f"mark {name}\n".encode())
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(LINE_MAX)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise MarkError(f"the recorder did not answer within {timeout:g} s") from None
    finally:
        sock.close()
    answer = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    verb, _, rest = answer.partition(" ")
    if verb == "ok" and rest.isdigit():
        return int(rest)
    if verb == "error":
        raise MarkError(rest)
    raise MarkError(f"unexpected answer from the recorder: {answer!r}")


__all__ = ["ENV", "MarkError", "MarkServer", "check_name", "send_mark"]
