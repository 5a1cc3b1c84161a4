"""NETCONF messages over SSH (RFC 6242): end-of-message framing (``]]>]]>``) until both
hellos say base:1.1, then chunked framing. Bounded: a message larger than ``max_size``
ends the session rather than the server's memory."""

from __future__ import annotations

EOM = b"]]>]]>"
MAX_MESSAGE = 4 * 1024 * 1024


class FramingError(Exception):
    """The peer broke the framing: the session ends (RFC 6242 4.2)."""


def frame(message: bytes, chunked: bool) -> bytes:
    if not chunked:
        return message + EOM
    return b"\n#%d\n" % len(message) + message + b"\n##\n"


class Deframer:
    """Bytes in, whole messages out."""

    def __init__(self, max_size: int = MAX_MESSAGE) -> None:
        self.max_size = max_size
        self.chunked = False
        self.buf = bytearray()
        self.message = bytearray()  # chunked: the chunks of the message so far

    def push(self, data: bytes) -> None:
        self.buf += data

    def pop(self) -> bytes | None:
        """The next whole message, or None until more bytes come. One at a time: the
        framing may change after a message (the hellos)."""
        return self._next_chunked() if self.chunked else self._next_eom()

    def _next_eom(self) -> bytes | None:
        end = self.buf.find(EOM)
        if end < 0:
            if len(self.buf) > self.max_size:
                raise FramingError(f"message larger than {self.max_size} bytes")
            return None
        msg = bytes(self.buf[:end])
        del self.buf[:end + len(EOM)]
        return msg

    def _next_chunked(self) -> bytes | None:
        while True:
            if len(self.buf) < 4:
                return None
            if self.buf[:2] != b"\n#":
                raise FramingError("a chunk must start with LF #")
            if self.buf[2:4] == b"#\n":  # end of chunks
                del self.buf[:4]
                if not self.message:
                    raise FramingError("a message with no chunk")
                msg = bytes(self.message)
                self.message = bytearray()
                return msg
            lf = self.buf.find(b"\n", 2)
            if lf < 0:
                if len(self.buf) > 13:  # "\n#" + 10 digits + "\n"
                    raise FramingError("a chunk size of more than 10 digits")
                return None
            digits = bytes(self.buf[2:lf])
            if not digits.isdigit() or digits.startswith(b"0") or int(digits) > 4294967295:
                raise FramingError(f"bad chunk size {digits[:12]!r}")
            size = int(digits)
            if len(self.message) + size > self.max_size:
                raise FramingError(f"message larger than {self.max_size} bytes")
            if len(self.buf) < lf + 1 + size:
                return None
            self.message += self.buf[lf + 1:lf + 1 + size]
            del self.buf[:lf + 1 + size]
