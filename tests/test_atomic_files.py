"""Every file mvfoul writes is complete or absent: atomic writes, strict JSON, atomic checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from mvfoul import atomic
from mvfoul.errors import OutputError


def test_strict_json_writes_nan_and_infinities_as_null(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": 2.5}})

    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    assert json.loads(target.read_text(), parse_constant=refuse) == {
        "a": None,
        "b": [1.0, None, None],
        "c": {"d": 2.5},
    }


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("the writer failed mid-way")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_unwritable_target_is_one_line_naming_it(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(
        OutputError, match=r"cannot write .*file/x\.json: Not a directory; the previous version"
    ):
        atomic.write_json(tmp_path / "file" / "x.json", {})


WRITER = """
import hashlib, sys
from pathlib import Path
from mvfoul import atomic
target = Path(sys.argv[1])
n = 0
while True:
    n += 1
    body = bytes([n % 251]) * (8 << 20)
    with atomic.atomic_path(target) as tmp:
        tmp.write_bytes(hashlib.sha256(body).digest() + body)
    print(n, flush=True)
"""


def test_a_writer_killed_mid_write_never_leaves_a_truncated_file(tmp_path):
    """SIGKILL at arbitrary moments of 8 MB writes: the target is always a complete file."""
    target = tmp_path / "big.bin"
    for delay in (0.05, 0.13, 0.31):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
        )
        writer.stdout.readline()  # one complete write done
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        data = target.read_bytes()
        assert hashlib.sha256(data[32:]).digest() == data[:32] and len(data) == 32 + (8 << 20)


def test_checkpoints_are_saved_through_a_temporary_file_beside_them(tmp_path):
    from mvfoul.training.checkpoints import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 2}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    with pytest.raises(TypeError, match="no storage_options"):  # as Lightning's own writer
        io.save_checkpoint({"epoch": 3}, target, storage_options={"anon": True})
    assert torch.load(target, weights_only=True)["epoch"] == 2
