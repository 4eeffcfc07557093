"""Side-by-side speed: vitlab against timm and transformers with identical weights, in one process.

Used by ``benchmarks/infer.py``, ``benchmarks/train.py`` and ``vitlab benchmark``. Contenders of one row
are timed in alternation (A B C A B C ...) and the median is kept, so a change in clock speed or
background load hits all of them alike. Peers that are not installed are left out of the table.
Nothing here is asserted in tests: speed is machine-dependent; the numbers are printed.

Each mode is compared with the fastest peer in that same mode: timm as users run it, and timm set up
the way a speed-minded user would (``torch.compile`` with inductor freezing, ``.bfloat16()`` weights,
vitlab's own int8 recipe). Speedups across modes (bf16 against fp32) are a separate, labelled column.
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
from torch.utils.flop_counter import FlopCounterMode

from ..models import VisionTransformer, create_model
from .precision import CastLinear, for_inference, per_channel_dynamic_qconfig, quantize_dynamic

MODES = ("fp32", "bf16", "int8")


@dataclass
class Row:
    """One benchmark row: img/s of every contender for one model, batch and mode."""

    model: str
    batch: int
    mode: str
    img_per_s: dict[str, float] = field(default_factory=dict)
    gflops: dict[str, float] = field(default_factory=dict)  # achieved, from the analytic MAC count
    max_diff: dict[str, float] = field(default_factory=dict)  # largest |logit - eager fp32 vitlab logit|


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, min_seconds: float = 0.3, warm: bool = False
) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation after one warm-up call each.

    Each timing covers at least ``min_seconds`` (several calls for fast functions). ``warm``: the
    caller has already run each function once, so the first round is timed with one call each and
    sets the number of calls of the later rounds (saves a call per function: ~10 s for ViT-B/16 at
    batch 16 on one busy core).
    """
    calls = dict.fromkeys(fns, 1)
    if not warm:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()  # warm-up: allocator, lazy init, kernel selection
            calls[name] = max(1, round(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / calls[name])
            if warm and r == 0:
                calls[name] = max(1, round(min_seconds / max(times[name][0], 1e-6)))
    return {k: statistics.median(v) for k, v in times.items()}


def _best_gflops(fn: Callable[[], object], flops: float, rounds: int) -> float:
    """GFLOP/s of ``fn`` from its fastest of ``rounds`` calls after one warm-up: a peak, not a median (a
    busy moment on a shared machine must not lower the ceiling the model rows are compared to)."""
    times = []
    with torch.inference_mode():
        fn()
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, rounds: int = 30) -> float:
    """GFLOP/s of an n x n x n matmul in ``dtype`` on the CPU, the best of ``rounds``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return _best_gflops(lambda: a @ b, 2 * n**3, rounds)


def int8_matmul_peaks(n: int = 1024, rounds: int = 30) -> dict[str, float]:
    """GOP/s of each int8 GEMM this PyTorch offers on the CPU (n x n x n, best of ``rounds``), by name.

    ``torch._int_mm`` (int8 x int8 -> int32); ``quantized::linear_dynamic``, the op of ``quantize_dynamic``
    and of vitlab's int8 (it also quantizes its fp32 input on every call); oneDNN's static ``qlinear``
    (uint8 x int8 -> fp32), the kernel inductor's int8 lowering calls. Kernels missing here are left out.
    """
    flops = 2 * n**3
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    x = torch.randn(n, n)
    kernels: dict[str, Callable[[], object]] = {"torch._int_mm": lambda: torch._int_mm(a, a)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = quantize_dynamic(nn.Sequential(nn.Linear(n, n)), {"0": per_channel_dynamic_qconfig})
    kernels["quantized::linear_dynamic"] = lambda: dyn(x)
    with contextlib.suppress(AttributeError, RuntimeError):
        packed = torch.ops.onednn.qlinear_prepack(a, [n, n])
        u8, scales, zeros = (
            torch.randint(0, 256, (n, n), dtype=torch.uint8),
            torch.ones(n),
            torch.zeros(n, dtype=torch.long),
        )
        kernels["onednn::qlinear_pointwise"] = lambda: torch.ops.onednn.qlinear_pointwise(
            u8, 1.0, 0, packed, scales, zeros, None, 1.0, 0, torch.float32, "none", [], ""
        )
    peaks = {}
    for name, fn in kernels.items():
        with contextlib.suppress(RuntimeError, NotImplementedError):
            peaks[name] = _best_gflops(fn, flops, rounds)
    return peaks


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


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile`` with inductor freezing (``torch._inductor.config.freezing``): weights become
    constants, pre-packed for oneDNN and fused with their pointwise neighbours. The fastest way a timm
    user runs a fixed model on the CPU; it compiles on the first call (tens of seconds on 2 cores)."""
    return torch.compile(model, options={"freezing": True})


def int8_all_linear(model: nn.Module) -> nn.Module:
    """A peer's usual int8: every Linear dynamically quantized, per-tensor (a copy)."""
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def int8_vitlab_recipe(model: nn.Module) -> nn.Module:
    """A copy of a timm ViT quantized the way :func:`~vitlab.infer.precision.for_inference` quantizes vitlab's:
    the attention output projection and the MLP in per-channel dynamic int8, q/k/v (and so the attention
    product) in bf16, the classifier in fp32. Plain modules, as a timm user would write it."""
    model = copy.deepcopy(model).eval()
    names = ("attn.proj", "mlp.fc1", "mlp.fc2")
    spec = {
        n: per_channel_dynamic_qconfig for n, m in model.named_modules() if type(m) is nn.Linear and n.endswith(names)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = quantize_dynamic(model, spec)
    for block in model.blocks:
        block.attn.qkv = CastLinear(block.attn.qkv.to(torch.bfloat16), torch.bfloat16)
        block.attn.proj = CastLinear(block.attn.proj, torch.float32)  # the int8 kernel takes fp32 input
    return model


def _in_dtype(model: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run a ``dtype`` model on float32 input, returning float32 (as vitlab's :func:`for_inference` does)."""
    return lambda x: model(x.to(dtype)).float()


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


def _timm_tuned(model: nn.Module, mode: str, compile_peers: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """timm in ``mode`` as a speed-minded user runs it (each compiled contender gets its own copy)."""
    if mode == "fp32":
        return {"timm compiled": compiled(copy.deepcopy(model))} if compile_peers else {}
    if mode == "bf16":
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        runs = {"timm .bfloat16()": _in_dtype(bf16, torch.bfloat16)}
        if compile_peers:
            runs["timm .bfloat16() compiled"] = _in_dtype(compiled(copy.deepcopy(bf16)), torch.bfloat16)
        return runs
    recipe = int8_vitlab_recipe(model)
    runs = {"timm int8 vitlab recipe": recipe}
    if compile_peers:
        runs["timm int8 recipe compiled"] = compiled(copy.deepcopy(recipe))
    return runs


def inference_contenders(
    vitlab_model: VisionTransformer, others: dict[str, nn.Module], mode: str, compile_peers: bool = True
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Callables for one mode, every peer way first, then vitlab's :func:`for_inference` conversion.

    Peers as users run them: eager fp32, bf16 through autocast, int8 as ``quantize_dynamic`` of every
    Linear. timm also as a speed-minded user runs it (``compile_peers``): compiled with freezing in fp32,
    ``.bfloat16()`` weights (eager and compiled), and vitlab's int8 recipe (eager and compiled).
    """
    runs: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for lib, m in others.items():
        if mode == "fp32":
            runs[lib] = _call(lib, m)
        elif mode == "bf16":
            runs[f"{lib} autocast"] = _autocast_bf16(_call(lib, m))
        else:
            runs[f"{lib} int8 all Linear"] = _call(lib, int8_all_linear(m))
    if "timm" in others:
        runs.update(_timm_tuned(others["timm"], mode, compile_peers))
    runs["vitlab"] = for_inference(vitlab_model, mode)
    return runs


def is_peer(contender: str) -> bool:
    return not contender.startswith("vitlab")


def bench_inference(
    name: str,
    batch: int,
    modes: tuple[str, ...] = MODES,
    rounds: int = 5,
    with_peers: bool = True,
    compile_peers: bool = True,
    compile_vitlab: bool = False,
) -> list[Row]:
    """Rows for one model and batch size: every mode, every contender, img/s and its largest output
    difference from eager fp32 vitlab (a check that every contender runs the same model).

    ``compile_vitlab`` adds vitlab's eager model under :func:`compiled` (fp32, bf16), to tell whether
    compiling is a better path than :func:`for_inference`'s conversion.
    """
    torch.manual_seed(0)
    model = create_model(name).eval()
    others = peers(model, name) if with_peers else {}
    x = torch.randn(batch, model.cfg.in_chans, *model.cfg.img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x[:1])
    flops = counter.get_total_flops()  # per image, measured (matmuls, convolution, attention)
    with torch.inference_mode():
        reference = model(x)
    rows = []
    for mode in modes:
        torch._dynamo.reset()
        runs = inference_contenders(model, others, mode, compile_peers=with_peers and compile_peers)
        if compile_vitlab and mode != "int8":  # freezing cannot fold quantized or pre-packed weights
            dtype = torch.float32 if mode == "fp32" else torch.bfloat16
            runs["vitlab eager, compiled"] = _in_dtype(compiled(copy.deepcopy(model).to(dtype)), dtype)
        row = Row(name, batch, mode)
        # a silent fallback to eager at dynamo's recompile limit (8 per function, shared by all the
        # compiled models of this process) would be timed as "compiled": start each mode afresh, and fail
        with torch.inference_mode(), torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            for k, f in runs.items():  # the warm-up call, which compiles the compiled ones
                row.max_diff[k] = (f(x).float() - reference).abs().max().item()
            seconds = interleaved({k: (lambda f=f: f(x)) for k, f in runs.items()}, rounds, warm=True)
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


def best_peer(row: Row) -> tuple[str, float] | None:
    """The fastest peer contender of a row and its img/s (None without peers)."""
    return max(((k, v) for k, v in row.img_per_s.items() if is_peer(k)), key=lambda kv: kv[1], default=None)


def format_rows(rows: list[Row], peaks: dict[str, float]) -> str:
    """A table: img/s; the ratio to the fastest peer in the same mode (the comparison that counts); the
    cross-mode ratio to timm fp32 eager; the fraction of the mode's own peak; the largest difference
    from eager fp32 vitlab logits.

    ``peaks`` maps a mode (``fp32``, ``bf16``, ``int8``) to the GFLOP/s of its best matmul; a mode
    missing there gets ``-``.
    """
    lines = [
        f"{'model':<24} {'batch':>5} {'mode':<5} {'contender':<28} {'img/s':>8} {'x best peer':>11} "
        f"{'x timm fp32 (cross-mode)':>24} {'mode peak':>9} {'max |diff|':>10}"
    ]
    base: dict[tuple[str, int], float] = {}
    for row in rows:
        if row.mode == "fp32" and "timm" in row.img_per_s:
            base[(row.model, row.batch)] = row.img_per_s["timm"]
    for row in rows:
        best = best_peer(row)
        ref = base.get((row.model, row.batch))
        peak = peaks.get(row.mode)
        for k, v in row.img_per_s.items():
            r1 = f"{v / best[1]:.2f}x" if best else "-"
            r2 = f"{v / ref:.2f}x" if ref else "-"
            frac = f"{100 * row.gflops[k] / peak:.0f}%" if peak else "-"
            diff = f"{row.max_diff[k]:.1e}" if k in row.max_diff else "-"
            lines.append(
                f"{row.model:<24} {row.batch:>5} {row.mode:<5} {k:<28} {v:>8.2f} {r1:>11} {r2:>24} {frac:>9} {diff:>10}"
            )
    return "\n".join(lines)


__all__ = [
    "MODES",
    "Row",
    "bench_inference",
    "best_peer",
    "compiled",
    "format_rows",
    "inference_contenders",
    "int8_all_linear",
    "int8_matmul_peaks",
    "int8_vitlab_recipe",
    "interleaved",
    "is_peer",
    "machine",
    "matmul_peak",
    "peers",
    "train_contenders",
]
