"""Every kind of file vitlab writes gets the usual permissions, and temporaries left by a killed writer
are removed by the next write of the same target (issue 13, items 4 and 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitlab.models import create_model
from vitlab.weights import export_hf, export_jax, export_timm, save
from vitlab.weights.io import atomic_path, write_json


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_every_writer_gives_the_usual_mode(tmp_path: Path, umask_022: int) -> None:
    model = create_model("vit_tiny_patch16_224", depth=1, num_classes=3)
    written = [
        save(model, tmp_path / "vitlab.safetensors"),
        tmp_path / "timm.safetensors",
        tmp_path / "timm.pth",
        tmp_path / "jax.npz",
    ]
    export_timm(model, written[1])
    export_timm(model, written[2])
    export_jax(model.state_dict(), model.cfg, written[3])
    export_hf(model, tmp_path / "hf")
    written += sorted((tmp_path / "hf").iterdir())
    write_json({"a": 1}, tmp_path / "x.json")
    written.append(tmp_path / "x.json")
    from vitlab.export import export_model

    export_model(model, tmp_path / "m.onnx")
    written.append(tmp_path / "m.onnx")
    for path in written:
        assert _mode(path) == umask_022, f"{path.name}: {oct(_mode(path))}"


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "best.safetensors"
    code = textwrap.dedent(f"""
        import os, time
        from vitlab.weights.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            print(tmp, flush=True)
            time.sleep(60)
    """)
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tmp = Path(writer.stdout.readline().strip())
    assert tmp.exists() and tmp.name.startswith(f".best.safetensors.{writer.pid}.")
    # While the writer lives, its temporary is left alone by another write of the same target.
    with atomic_path(target) as mine:
        mine.write_bytes(b"a")
    assert tmp.exists()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert tmp.exists()  # SIGKILL runs no clean-up
    with atomic_path(target) as mine:
        mine.write_bytes(b"b")
    assert not tmp.exists() and target.read_bytes() == b"b"
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]
