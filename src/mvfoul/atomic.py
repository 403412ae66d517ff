"""Every file mvfoul writes is written atomically: a temporary file beside the target (a rename
across filesystems is a copy, not atomic), flushed to disk, then renamed over the target. A
reader sees the previous complete file or the new one, even after a SIGKILL or a full disk.
JSON is strict (RFC 8259): NaN and infinities (the official metric's NaN) become ``null``.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mvfoul.errors import OutputError


@contextmanager
def atomic_path(target: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write the whole file to. On a clean exit it is
    flushed to disk (``durable``) and renamed over ``target``; on an error it is removed, and an
    ``OSError`` (full disk, read-only folder...) becomes one OutputError line naming the file."""
    target = Path(target)
    # Hidden, unique per writer: concurrent writers (DataLoader workers filling the frame cache)
    # never share a temporary file, and a leftover one never matches a glob like *.ckpt.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        if durable:
            # Some filesystems neither open nor fsync folders.
            with suppress(OSError):
                fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except BaseException as err:
        with suppress(OSError):  # its folder is gone or not a folder: nothing to remove
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(
                f"cannot write {target}: {err.strerror or err}; the previous version, if any, is intact"
            ) from err
        raise


def write_text(target: str | Path, text: str, durable: bool = True) -> None:
    with atomic_path(target, durable) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def strict_json_value(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(v) for v in value]
    return value


def dumps_json(value: Any) -> str:
    return json.dumps(strict_json_value(value), indent=2, allow_nan=False) + "\n"


def write_json(target: str | Path, value: Any) -> None:
    write_text(target, dumps_json(value))
