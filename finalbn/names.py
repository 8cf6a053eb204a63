"""Names listed from a file system or given on a command line: text, or other bytes.

Python carries bytes that are not UTF-8 as surrogate escapes, which the
manifest, Parquet, MLflow and a strict terminal all refuse. Its own module,
importing nothing, so that the config checks (which must not import torch)
and the data layer share one test.
"""

from __future__ import annotations

import os


def is_utf8(text: str) -> bool:
    """Whether a name listed from the file system is UTF-8 text (no surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path: str) -> str:
    """A listed path as a message shows it: as is when UTF-8, else the repr of its bytes (b'caf\\xe9.jpg')."""
    return path if is_utf8(path) else repr(os.fsencode(path))
