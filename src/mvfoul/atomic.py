"""Every file mvfoul writes is written atomically: a temporary file in the same folder, flushed
to disk, then renamed over the target.

A rename within one folder is atomic on POSIX filesystems, so a reader (or a resumed run) sees
either the previous complete file or the new complete one, never a truncated one: not after a
SIGKILL mid-write, not when the disk fills up half-way through a checkpoint. The temporary file
sits in the target's own folder because a rename across filesystems is a copy, which is not
atomic (and ``/tmp`` is often a different, smaller disk than a cluster's run folders).

JSON is written strictly (RFC 8259): NaN and infinities, which ``json.dumps`` would write as the
non-standard ``NaN``/``Infinity`` tokens, become ``null``. The official evaluator yields NaN for a
class absent from the ground truth; readers of mvfoul's JSON files get ``null`` there.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mvfoul.errors import OutputError


def _temporary_sibling(target: Path) -> Path:
    # Hidden, unique per writer: concurrent writers (DataLoader workers filling the frame cache)
    # never share a temporary file, and a leftover one never matches a glob like *.ckpt.
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - nor fsync them
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # its folder is gone or not a folder: there is nothing to remove
        pass


@contextmanager
def atomic_path(target: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; write the whole file there. On a clean exit it is
    flushed to disk (``durable``) and renamed over ``target``; on any error it is removed and
    ``target`` is left as it was. An ``OSError`` (full disk, read-only folder...) becomes one
    :class:`~mvfoul.errors.OutputError` line naming the file."""
    target = Path(target)
    tmp = _temporary_sibling(target)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        if durable:
            _fsync_folder(target.parent)
    except OSError as err:
        _remove(tmp)
        raise OutputError(
            f"cannot write {target}: {err.strerror or err}; the previous version, if any, is intact"
        ) from err
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(target: str | Path, data: bytes, durable: bool = True) -> None:
    with atomic_path(target, durable) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str, durable: bool = True) -> None:
    with atomic_path(target, durable) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)


def strict_json_value(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(v) for v in value]
    return value


def dumps_json(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text (NaN and infinities as null)."""
    return json.dumps(strict_json_value(value), indent=indent, allow_nan=False) + "\n"


def write_json(target: str | Path, value: Any, indent: int | None = 2) -> None:
    write_text(target, dumps_json(value, indent))
