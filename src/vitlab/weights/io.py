"""Reading and writing weight files safely.

- safetensors is the default for everything vitlab writes: no code runs when it is read.
- Pickles (``.pth``, ``.bin``) are read only with ``torch.load(weights_only=True)``; one that needs
  anything else (a ``__reduce__`` payload, a custom class) is refused, and its code never runs.
- Every write goes to a temporary file in the target directory and is renamed into place, so an
  interrupted or failed write leaves any earlier file intact.
- Every failure is a :class:`CheckpointError` that names the file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
METADATA_KEY = "vitlab"


class CheckpointError(ValueError):
    """A weight file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights (travels with them, as timm's pretrained_cfg).

    Attributes:
        input_size: ``(C, H, W)`` the model expects.
        crop_pct: Resize the shorter side to ``size / crop_pct``, then centre-crop ``size``.
        interpolation: Resize filter: ``bicubic``, ``bilinear`` or ``nearest``.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        channel_order: ``RGB``, or ``BGR`` for weights trained on channel-flipped images (Hugging Face's
            MobileViT processors flip RGB to BGR after rescaling); mean and std are in this order. Files
            written before this field existed load as ``RGB``.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        c = self.input_size[0]
        if not all(math.isfinite(v) for v in (*self.mean, *self.std, self.crop_pct)):
            raise ValueError(f"preprocessing: mean, std and crop_pct must be finite, got {self.mean}, {self.std}")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"preprocessing: std must be positive, got {self.std}")
        if any(v <= 0 for v in self.input_size):
            raise ValueError(f"preprocessing: input_size must be positive, got {self.input_size}")
        if len(self.input_size) != 3 or len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"preprocessing: input_size {self.input_size} does not match mean/std of {c} channels")
        if not 0.05 <= self.crop_pct <= 1:  # below 5 % the resize before the crop is 20x the input: a typo
            raise ValueError(f"preprocessing: crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"preprocessing: unknown interpolation {self.interpolation!r}")
        if self.channel_order not in ("RGB", "BGR") or (self.channel_order == "BGR" and c != 3):
            raise ValueError(
                f"preprocessing: channel_order must be 'RGB' or (3 channels) 'BGR', got {self.channel_order!r}"
            )

    @classmethod
    def for_config(cls, cfg: Any, **changes: Any) -> Preprocessing | None:
        """timm's ViT defaults (mean = std = 0.5, crop 0.9, bicubic) at the model's size and channels, or the
        family's own (a config's ``preprocessing`` class attribute, e.g. Swin's ImageNet mean/std, for 3
        channels); None for a model whose inputs are not images (a 1-D sequence model)."""
        shape = tuple(cfg.input_shape)
        if len(shape) != 3:
            return None
        c = shape[0]
        base = dict(input_size=shape, mean=(0.5,) * c, std=(0.5,) * c)
        family = getattr(cfg, "preprocessing", None) or {}
        if c != 3:  # per-channel statistics of RGB photos say nothing about other inputs
            family = {k: v for k, v in family.items() if k not in ("mean", "std")}
        return cls(**{**base, **family, **changes})


@dataclass
class CheckpointMeta:
    """What travels with vitlab weights besides the tensors."""

    config: dict[str, Any]
    preprocessing: Preprocessing | None  # None for models whose inputs are not images
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    architecture: str = "vit"  # the registry's family name; files written before it was recorded are ViTs

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "architecture": self.architecture,
                "config": self.config,
                "preprocessing": asdict(self.preprocessing) if self.preprocessing else None,
                "class_names": self.class_names,
                "extra": self.extra,
            }
        )

    @classmethod
    def from_json(cls, text: str, path: Path) -> CheckpointMeta:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
                raise TypeError("'config' must be a JSON object")
            pre = data["preprocessing"]
            return cls(
                config=data["config"],
                preprocessing=Preprocessing(**pre) if pre is not None else None,
                class_names=data.get("class_names"),
                extra=data.get("extra") or {},
                architecture=data.get("architecture", "vit"),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: the vitlab metadata in this file is damaged ({err})") from None


# ---------------------------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary is named ``.<name>.<pid>.<random>.tmp<suffix>``: a later write of the same target removes
    temporaries whose writing process is gone (left by SIGKILL or SIGTERM), never a live writer's. The file
    gets the usual permissions (0666 less the umask), whatever the writer created it with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    # The temporary name keeps the real suffix: some writers and readers (torch.export) go by it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(Path(tmp), path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def publish(tmp: Path, path: Path) -> None:
    """Give a finished temporary the usual permissions and rename it onto ``path`` (atomic on POSIX)."""
    # mkstemp makes 0600 files, and writers that replace the file (safetensors' save_file) do too
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` (see :func:`atomic_path`) whose writing process no longer runs."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write tensors (made contiguous, shared storage split) to ``path`` atomically."""
    from safetensors.torch import save_file

    clean = {
        k: v.detach().contiguous().clone() if _shares_storage(v, tensors) else v.detach().contiguous()
        for k, v in tensors.items()
    }
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def _shares_storage(t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return sum(o.untyped_storage().data_ptr() == ptr for o in tensors.values()) > 1


def write_json(data: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file, it may be truncated or corrupt ({err})"
        ) from None
    return tensors, metadata


def read_pickle(path: str | os.PathLike) -> Any:
    """Load a PyTorch pickle with ``weights_only=True``: tensors and plain containers only, no code."""
    path = Path(path)
    _check_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        # keep what was refused, drop torch's advice on how to allow it
        detail = detail.split(" Please use")[0].replace("WeightsUnpickler error: ", "").strip().rstrip(".")
        raise CheckpointError(
            f"{path}: refused: this pickle needs to run code to load ({detail.strip()}). vitlab only loads "
            "pickles that hold plain tensors (torch.load weights_only=True); re-save the weights as "
            "safetensors with a tool you trust"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint, it may be truncated or corrupt ({str(err).splitlines()[0]})"
        ) from None


READ_LIMIT_ENV = "VITLAB_MAX_READ_GB"


def check_read_size(nbytes: int, what: str, default_gb: float, error: type[ValueError] = CheckpointError) -> None:
    """Refuse, before reading, a file that declares more bytes than vitlab reads into memory.

    Archive headers can claim anything: an 18 MB ``.npz`` or ``.tar.gz`` can hold a 4 GiB member, which
    was read whole and ended in a MemoryError. The limit is ``$VITLAB_MAX_READ_GB`` (GiB) if set, else
    ``default_gb`` (the caller's: a dataset read into memory, a weight file).

    Raises:
        error: naming ``what``, the declared size, the limit and how to raise it.
    """
    raw = os.environ.get(READ_LIMIT_ENV)
    try:
        limit = float(raw) if raw else default_gb
    except ValueError:
        raise error(f"{READ_LIMIT_ENV}={raw!r} is not a number of GiB") from None
    if nbytes > limit * 2**30:
        raise error(
            f"{what}: declares {nbytes / 2**30:.2f} GiB ({nbytes:,} bytes) of data, over the {limit:g} GiB that "
            f"vitlab reads into memory; if the file is what you expect, raise the limit with {READ_LIMIT_ENV}=<GiB>"
        )


def npz_declared_bytes(path: str | os.PathLike, keys: tuple[str, ...] | None = None) -> int:
    """Bytes the arrays of an ``.npz`` (all, or ``keys``) declare, read from the headers only: for each member
    the larger of its zip entry's size and its ``.npy`` header's shape x itemsize (what NumPy allocates)."""
    total = 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if keys is not None and info.filename.removesuffix(".npy") not in keys:
                continue
            declared = info.file_size
            with z.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                        version, np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(f)
                    declared = max(declared, math.prod(shape) * dtype.itemsize)
                except (ValueError, OSError, EOFError):
                    pass  # not an .npy member: np.load reports it
            total += declared
    return total


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of a NumPy ``.npz`` (no pickled objects allowed), refused before reading if they declare more
    than 16 GiB (``$VITLAB_MAX_READ_GB``; the largest published ViT, ViT-G/14, is 7.4 GB in fp32)."""
    path = Path(path)
    _check_file(path)
    try:
        check_read_size(npz_declared_bytes(path), str(path), default_gb=16)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a readable .npz archive, it may be truncated or corrupt ({err})") from None


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    _check_file(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_vitlab_meta(metadata: dict[str, str], path: Path) -> CheckpointMeta | None:
    """The vitlab metadata of a safetensors header, or None if the file is not a vitlab file."""
    text = metadata.get(METADATA_KEY)
    return CheckpointMeta.from_json(text, path) if text else None
