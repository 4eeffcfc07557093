"""Parity checks for a conversion: the source library runs the *source file* by its own means, and
every output (vitlab's model of the source, each written file read back) is compared with it.

    timm / DeiT   timm.models.load_state_dict(file) -> checkpoint_filter_fn -> strict load into timm's ViT
    hf            transformers' from_pretrained(directory)
    jax           timm's own ``_load_weights(model, file.npz)`` (the original and big_vision layouts)
    vit_pytorch   vit_pytorch.ViT built from the config, load_state_dict(file's tensors) strictly

None of these goes through vitlab's key mapping, so a wrong mapping shows up as a difference. Every
check returns a :class:`Check`; the reference libraries are imported only when a check runs, and a
missing one gives a skipped check that says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import ModelConfig, ViTConfig, VitlabModel
from .families import FAMILIES
from .timm import timm_kwargs

TOLERANCE = 1e-4  # fp32, logits


@dataclass
class Check:
    """One comparison: ``name`` ran, outputs differ by at most ``max_abs_diff``."""

    name: str
    max_abs_diff: float | None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is not None or (self.max_abs_diff is not None and self.max_abs_diff <= TOLERANCE)

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        verdict = "ok" if self.ok else f"FAILED (> {TOLERANCE:g})"
        return f"{self.name}: max |diff| = {self.max_abs_diff:.3g} {verdict}"


@dataclass
class Reference:
    """What a reference library computed on a batch: ``output`` is logits (or features, see ``kind``).

    ``kind`` says which vitlab output it corresponds to: ``"logits"`` (``model(x)``, pooled features for
    a model without a head) or ``"features"`` (``model.forward_features(x)``, all tokens).
    """

    library: str
    output: torch.Tensor | None
    kind: str = "logits"
    skipped: str | None = None


def probe_input(model: VitlabModel, batch: int = 2) -> torch.Tensor:
    """A fixed random batch at the model's size (seeded, so reruns compare the same numbers)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *model.input_shape, generator=g)


@torch.no_grad()
def output_of(model: VitlabModel, x: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """The vitlab output that a reference of ``kind`` is compared with."""
    model.eval()
    return model.forward_features(x) if kind == "features" else model(x)


@torch.no_grad()
def compare(name: str, output: torch.Tensor, reference: Reference) -> Check:
    """``output`` against a reference's, or a skipped check carrying the reference's reason."""
    if reference.output is None:
        return Check(name, None, reference.skipped)
    if output.shape != reference.output.shape:
        return Check(name, None, f"shapes differ: {tuple(output.shape)} vs {tuple(reference.output.shape)}")
    return Check(name, (output.float() - reference.output.float()).abs().max().item())


def _missing(module: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"{module} is not installed"


def _timm_model(cfg: ViTConfig) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    return TimmViT(**timm_kwargs(cfg)).eval()


@torch.no_grad()
def run_timm_file(path: Path, cfg: ModelConfig, x: torch.Tensor, deit: bool = False) -> Reference:
    """timm reads the file (its ``load_state_dict`` unwraps ``model``/``state_dict`` and strips ``module.``),
    its ``checkpoint_filter_fn`` renames DeiT III's ``gamma_1/2``, and its model loads the result strictly.

    Other families: the family's registered timm model (``FamilyFormats.timm_model``) loads the file's
    tensors strictly (they are in timm's names)."""
    if why := _missing("timm"):
        return Reference("timm", None, skipped=why)
    from timm.models import load_state_dict

    sd = load_state_dict(str(path), weights_only=True)  # pickles were already vetted by vitlab's safe reader
    if cfg.architecture != "vit":
        family = FAMILIES.get(cfg.architecture)
        if family is None or family.timm_model is None:
            return Reference("timm", None, skipped=f"timm has no {cfg.architecture!r} model to compare with")
        try:
            ref = family.timm_model(cfg).eval()
        except ValueError as err:  # timm cannot express this config (the family says why)
            return Reference("timm", None, skipped=str(err))
        ref.load_state_dict(sd, strict=True)
        return Reference("timm", ref(x))
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        ref = _timm_model(cfg)
    except ValueError as err:
        return Reference("timm", None, skipped=str(err))
    ref.load_state_dict(checkpoint_filter_fn(sd, ref, adapt_layer_scale=deit), strict=True)
    return Reference("timm", ref(x))


@torch.no_grad()
def run_timm_state_dict(state_dict: dict[str, torch.Tensor], cfg: ViTConfig, x: torch.Tensor) -> Reference:
    """timm's ViT for ``cfg`` with ``state_dict`` loaded strictly (for files vitlab wrote in timm's names)."""
    if why := _missing("timm"):
        return Reference("timm", None, skipped=why)
    try:
        ref = _timm_model(cfg)
    except ValueError as err:
        return Reference("timm", None, skipped=str(err))
    ref.load_state_dict(state_dict, strict=True)
    return Reference("timm", ref(x))


@torch.no_grad()
def run_hf_dir(path: Path, cfg: ModelConfig, x: torch.Tensor) -> Reference:
    """transformers' ``from_pretrained`` on the directory: the classifier if the model has a head, else
    ``ViTModel`` (its pooler output when the weights have a pre-logits layer, else all tokens).
    Other families: their registered ``FamilyFormats.hf_logits``."""
    if why := _missing("transformers"):
        return Reference("transformers", None, skipped=why)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if cfg.architecture != "vit":
        family = FAMILIES.get(cfg.architecture)
        if family is None or family.hf_logits is None:
            return Reference("transformers", None, skipped=f"no transformers model for {cfg.architecture!r}")
        return Reference("transformers", family.hf_logits(path, x))
    if cfg.num_classes:
        ref = transformers.ViTForImageClassification.from_pretrained(path).eval()
        return Reference("transformers", ref(pixel_values=x).logits)
    out = transformers.ViTModel.from_pretrained(path).eval()(pixel_values=x)
    if cfg.representation_size:
        return Reference("transformers", out.pooler_output)
    return Reference("transformers", out.last_hidden_state, kind="features")


@torch.no_grad()
def run_jax_npz(path: Path, cfg: ViTConfig, x: torch.Tensor) -> Reference:
    """timm's own JAX reader (``_load_weights``) fills timm's ViT from the ``.npz``."""
    if why := _missing("timm"):
        return Reference("timm (JAX reader)", None, skipped=why)
    from timm.models.vision_transformer import _load_weights

    try:
        ref = _timm_model(cfg)
    except ValueError as err:
        return Reference("timm (JAX reader)", None, skipped=str(err))
    _load_weights(ref, str(path))
    return Reference("timm (JAX reader)", ref.eval()(x))


@torch.no_grad()
def run_vit_pytorch_file(path: Path, cfg: ViTConfig, x: torch.Tensor) -> Reference:
    """vit-pytorch's ``ViT`` built from the config loads the file's own tensors (its names) strictly."""
    if why := _missing("vit_pytorch"):
        return Reference("vit-pytorch", None, skipped=why)
    import vit_pytorch

    from .adapt import LoadReport, strip_prefixes, unwrap
    from .io import read_pickle, read_safetensors

    raw = read_safetensors(path)[0] if path.suffix == ".safetensors" else read_pickle(path)
    report = LoadReport(str(path), "vit_pytorch")
    sd = strip_prefixes(unwrap(raw, path, report), report)  # containers only; no key is renamed
    ref = vit_pytorch.ViT(
        image_size=cfg.img_size,
        patch_size=cfg.patch_size,
        num_classes=cfg.num_classes,
        dim=cfg.embed_dim,
        depth=cfg.depth,
        heads=cfg.num_heads,
        mlp_dim=cfg.mlp_dim,
        pool="cls" if cfg.class_token else "mean",
        channels=cfg.in_chans,
        dim_head=cfg.head_dim,
    ).eval()
    try:
        ref.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # older releases (LayerNorm inside mlp_head) do not fit today's module
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        return Reference("vit-pytorch", None, skipped=f"the installed vit-pytorch cannot load this layout: {first}")
    return Reference("vit-pytorch", ref(x))


# source format -> how its own library runs the file
SOURCE_RUNNERS: dict[str, Callable[[Path, ViTConfig, torch.Tensor], Reference]] = {
    "timm": run_timm_file,
    "deit": lambda path, cfg, x: run_timm_file(path, cfg, x, deit=True),
    "hf": run_hf_dir,
    "jax": run_jax_npz,
    "vit_pytorch": run_vit_pytorch_file,
}


def run_source(path: Path, source_format: str, cfg: ModelConfig, x: torch.Tensor) -> Reference:
    """The source file run by the library it came from, or a skipped reference saying why there is none."""
    if cfg.architecture != "vit" and source_format not in ("timm", "deit", "hf"):
        return Reference(source_format, None, skipped=f"no reference library reads {source_format!r} files")
    runner = SOURCE_RUNNERS.get(source_format)
    if runner is None:
        return Reference(source_format, None, skipped=f"no reference library reads {source_format!r} files")
    return runner(path, cfg, x)


@torch.no_grad()
def against_model(model: VitlabModel, other: VitlabModel, name: str) -> Check:
    """Compare two vitlab models on a seeded random batch (e.g. a model and its copy)."""
    x = probe_input(model)
    return compare(name, output_of(other, x), Reference("vitlab", output_of(model, x)))
