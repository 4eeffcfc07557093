"""A run directory owned by one training process at a time, and its metrics log read back safely.

Two runs writing one directory would interleave their metrics and overwrite each other's checkpoints,
and a fresh run over an old one would leave the old checkpoints for ``--resume`` to pick up. So:

- :class:`RunDirLock` takes an exclusive POSIX record lock (``lockf``) on ``RUN_DIR/.lock``; the kernel
  releases it when the process dies, however it dies, so a killed run never leaves a stale lock. (Not
  ``flock``: its lock is shared with forked children, so DataLoader workers outliving a killed run
  would keep the directory locked.)
- :func:`prepare_run_dir` refuses a fresh run into a directory that holds a run, unless
  ``run.overwrite=true`` clears it; ``--resume`` continues it instead.
- :func:`read_metrics` reads ``metrics.jsonl``, dropping a torn last line (what a kill mid-write leaves).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# What makes a directory "hold a run": any of the files a run writes.
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "best.safetensors", "last.safetensors", "report.md")


_HELD: set[str] = set()  # lock files this process holds


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (locked by another run, or holding a run)."""


class RunDirLock:
    """An exclusive lock on a run directory for the life of the process (or until :meth:`release`)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        """Take the lock without waiting.

        Raises:
            RunDirError: another live process holds it (its pid is named).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if key in _HELD:  # POSIX locks are per process: a second lock here would silently succeed
                raise BlockingIOError
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(
                f"{self.path.parent}: another vitlab train (pid {holder}) is using this run directory; "
                "wait for it, or choose another run.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._key = fd, key
        _HELD.add(key)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            _HELD.discard(self._key)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holds_run(run_dir: Path) -> list[str]:
    """The run files present in ``run_dir`` (empty: the directory holds no run)."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check (and for ``overwrite``, clear) a locked run directory before a run writes to it.

    Raises:
        RunDirError: a fresh run into a directory holding a run without ``overwrite``, or ``--resume``
            of a directory holding none.
    """
    present = holds_run(run_dir)
    if resume:
        if "checkpoints" not in present:
            raise RunDirError(f"{run_dir}: nothing to resume (no checkpoints/ in this directory)")
        return
    if not present:
        return
    if not overwrite:
        raise RunDirError(
            f"{run_dir}: already holds a run ({', '.join(present)}); continue it with --resume {run_dir}, "
            "replace it with run.overwrite=true, or choose another run.out_dir"
        )
    for entry in run_dir.iterdir():  # everything but the lock we hold
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    log.warning("%s: run.overwrite=true: removed the previous run (%s)", run_dir, ", ".join(present))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A torn last line (a kill mid-write) is dropped with a warning;
    a damaged line elsewhere is an error naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if number == len(lines):
                log.warning("%s: dropped a torn last line (%d bytes), as a kill mid-write leaves", path, len(line))
                break
            raise RunDirError(f"{path}: line {number} is not a metrics record ({err})") from None
        records.append(record)
    return records


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` with ``records`` (atomically)."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temporary file, then rename)."""
    from ..weights.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
