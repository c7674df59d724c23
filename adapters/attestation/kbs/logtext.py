"""One log record, one line: control characters in anything the KBS logs are escaped.

Request paths, exception messages and the like can carry what a client sent, percent-decoded. A
``%0A`` in a path used to end the log line and let the client write a line of its choosing; a
traceback spread one cheap request over hundreds of lines. The formatter here escapes every
control character (C0, DEL, C1, and the Unicode line and paragraph separators) after formatting,
tracebacks included, so every record is exactly one line whatever it contains.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def escape_controls(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape").decode()), text)


class OneLineFormatter(logging.Formatter):
    """``logging.Formatter`` whose output never holds a raw control character (see module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def configure(level: int) -> None:
    """Log to stderr, one escaped line per record, for the KBS and the libraries under it."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("enclaveflow.kbs").setLevel(level)
