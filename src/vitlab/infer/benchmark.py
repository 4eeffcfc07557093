"""Side-by-side speed: vitlab against timm and transformers with identical weights, in one process.

Used by ``benchmarks/infer.py``, ``benchmarks/train.py`` and ``vitlab benchmark``. Contenders of one row
are timed in alternation (A B C A B C ...) and the median is kept, so a change in clock speed or
background load hits all of them alike. Peers that are not installed are left out of the table.
Nothing here is asserted in tests: speed is machine-dependent; the numbers are printed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import VisionTransformer, create_model
from ..models.summary import estimate_macs
from .precision import for_inference, quantize_dynamic

MODES = ("fp32", "bf16", "int8")


@dataclass
class Row:
    """One benchmark row: img/s of every contender for one model, batch and mode."""

    model: str
    batch: int
    mode: str
    img_per_s: dict[str, float] = field(default_factory=dict)
    gflops: dict[str, float] = field(default_factory=dict)  # achieved, from the analytic MAC count


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_seconds: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation after one warm-up call each.

    Each timing covers at least ``min_seconds`` (several calls for fast functions).
    """
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()  # warm-up: allocator, lazy init, kernel selection
        calls[name] = max(1, round(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / calls[name])
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, rounds: int = 10) -> float:
    """GFLOP/s of an n x n x n matmul in ``dtype`` on the CPU, the best of ``rounds`` (a peak, not a median:
    a busy moment on a shared machine must not lower the ceiling the model rows are compared to)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = []
    with torch.inference_mode():
        a @ b
        for _ in range(rounds):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def machine() -> str:
    """CPU model, thread count and library versions, for the header of a table."""
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return (
        f"{cpu}, {torch.get_num_threads()} threads; torch {torch.__version__}, timm {version('timm')}, "
        f"transformers {version('transformers')}, onnxruntime {version('onnxruntime')}, vitlab {version('vitlab')}"
    )


def available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------------------------- contenders


def _autocast_bf16(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    return run


def _int8(model: nn.Module) -> nn.Module:
    """A peer's usual int8: every Linear dynamically quantized (a copy)."""
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def _hf_model(model: VisionTransformer) -> nn.Module | None:
    """The same weights in transformers' ViTForImageClassification (None if it cannot express the model)."""
    from transformers import ViTForImageClassification
    from transformers.utils import logging as hf_logging

    from ..weights import export_hf

    hf_logging.disable_progress_bar()

    with tempfile.TemporaryDirectory() as d:
        try:
            export_hf(model, d)
        except ValueError:
            return None
        hf = ViTForImageClassification.from_pretrained(d).eval()
    return hf


def peers(model: VisionTransformer, name: str) -> dict[str, nn.Module]:
    """timm and transformers models holding ``model``'s weights, for those installed."""
    out: dict[str, nn.Module] = {}
    if available("timm"):
        import timm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = timm.create_model(
                name, pretrained=False, num_classes=model.cfg.num_classes, img_size=model.cfg.img_size
            )
        t.load_state_dict(model.state_dict())
        out["timm"] = t.eval()
    if available("transformers"):
        hf = _hf_model(model)
        if hf is not None:
            out["transformers"] = hf
    return out


def _call(lib: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if lib == "transformers":
        return lambda x: model(pixel_values=x).logits
    return model


def inference_contenders(
    vitlab_model: VisionTransformer, others: dict[str, nn.Module], mode: str
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Callables for one mode. Peers run bf16 as autocast and int8 as ``quantize_dynamic`` on their
    Linear layers, the usual way each is used; vitlab runs its own :func:`for_inference` conversion."""
    runs: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for lib, m in others.items():
        if mode == "fp32":
            runs[lib] = _call(lib, m)
        elif mode == "bf16":
            runs[f"{lib} (autocast)"] = _autocast_bf16(_call(lib, m))
        else:
            runs[lib] = _call(lib, _int8(m))
    runs["vitlab"] = for_inference(vitlab_model, mode)
    return runs


def bench_inference(
    name: str, batch: int, modes: tuple[str, ...] = MODES, rounds: int = 5, with_peers: bool = True
) -> list[Row]:
    """Rows for one model and batch size: every mode, every contender, img/s and peak fraction."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    others = peers(model, name) if with_peers else {}
    x = torch.randn(batch, model.cfg.in_chans, *model.cfg.img_size)
    flops = 2 * estimate_macs(model.cfg)
    rows = []
    for mode in modes:
        runs = inference_contenders(model, others, mode)
        with torch.inference_mode():
            seconds = interleaved({k: (lambda f=f: f(x)) for k, f in runs.items()}, rounds)
        row = Row(name, batch, mode)
        for k, s in seconds.items():
            row.img_per_s[k] = batch / s
            row.gflops[k] = flops * batch / s / 1e9
        rows.append(row)
    return rows


def train_contenders(
    name: str, batch: int, others: dict[str, nn.Module], model: VisionTransformer
) -> dict[str, Callable[[], None]]:
    """One optimisation step (forward, cross-entropy, backward, AdamW) per contender, fp32 and bf16."""
    x = torch.randn(batch, model.cfg.in_chans, *model.cfg.img_size)
    y = torch.randint(0, model.cfg.num_classes, (batch,))
    steps: dict[str, Callable[[], None]] = {}
    for lib, m in [*others.items(), ("vitlab", model)]:
        m.train()
        call = _call(lib, m)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        for precision in ("fp32", "bf16"):

            def step(call=call, opt=opt, precision=precision) -> None:
                ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
                with ctx:
                    loss = nn.functional.cross_entropy(call(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            steps[f"{lib} {precision}"] = step
    return steps


def format_rows(rows: list[Row], peaks: dict[str, float]) -> str:
    """A table: img/s, ratio to timm fp32 and to timm in the same mode, fraction of the matmul peak.

    ``peaks`` maps ``fp32`` and ``bf16`` to GFLOP/s; int8 rows are compared with the fp32 peak (what
    the int8 kernels must beat to be worth it).
    """
    lines = [
        f"{'model':<24} {'batch':>5} {'mode':<5} {'contender':<24} {'img/s':>8} {'x timm fp32':>11} "
        f"{'x timm mode':>11} {'peak':>6}"
    ]
    base: dict[tuple[str, int], float] = {}
    for row in rows:
        if row.mode == "fp32" and "timm" in row.img_per_s:
            base[(row.model, row.batch)] = row.img_per_s["timm"]
    for row in rows:
        same = next((v for k, v in row.img_per_s.items() if k.startswith("timm")), None)
        ref = base.get((row.model, row.batch))
        peak = peaks.get("bf16" if row.mode == "bf16" else "fp32")
        for k, v in row.img_per_s.items():
            r1 = f"{v / ref:.2f}x" if ref else "-"
            r2 = f"{v / same:.2f}x" if same else "-"
            frac = f"{100 * row.gflops[k] / peak:.0f}%" if peak else "-"
            lines.append(f"{row.model:<24} {row.batch:>5} {row.mode:<5} {k:<24} {v:>8.2f} {r1:>11} {r2:>11} {frac:>6}")
    return "\n".join(lines)


__all__ = [
    "MODES",
    "Row",
    "bench_inference",
    "format_rows",
    "inference_contenders",
    "interleaved",
    "machine",
    "matmul_peak",
    "peers",
    "train_contenders",
]
