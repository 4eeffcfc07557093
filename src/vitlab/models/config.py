"""The model configuration: one frozen, validated dataclass per architecture.

A config is plain data. It is checked once, when it is made, so a bad combination fails at the
line that wrote it instead of deep inside a forward pass; it round-trips through a dict (and so
through JSON) so every checkpoint can carry the config that rebuilds its model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

PosEmbed = Literal["learn", "learn_2d", "sincos", "none"]
GlobalPool = Literal["token", "avg", "map", ""]
PatchEmbedKind = Literal["conv", "lucid"]
Act = Literal["gelu", "gelu_tanh"]

_POS_EMBEDS = ("learn", "learn_2d", "sincos", "none")
_POOLS = ("token", "avg", "map", "")
_PATCH_EMBEDS = ("conv", "lucid")
_ACTS = ("gelu", "gelu_tanh")


def _pair(value: Any, name: str) -> tuple[int, int]:
    """Normalise an int or a 2-sequence to ``(h, w)``, rejecting anything else by name."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or (height, width), got {value!r}")


class ModelConfig:
    """What every family's config provides: a dict round-trip, a validated ``replace`` and its architecture.

    Subclasses are frozen dataclasses. ``architecture`` names the family in the registry (and in every
    checkpoint); ``derived`` lists fields that None fills in from others, so ``replace`` derives them again.
    """

    architecture: ClassVar[str] = ""
    derived: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-friendly plain data."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build a config from plain data, rejecting keys the config does not have.

        Raises:
            ValueError: on an unknown key (named) or an invalid value.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a {cls.__name__} is a mapping of fields, got {type(data).__name__}")
        cls._check_keys(data)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key, value in data.items():  # numbers must be numbers: "x" for an eps fails deep inside a check
            default = defaults.get(key)
            if isinstance(default, (int, float)) and not isinstance(default, bool) and value is not None:
                items = value if isinstance(value, (list, tuple)) else [value]  # img_size may be (H, W)
                if not items or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
                    raise ValueError(f"{cls.__name__}.{key} must be a number, got {value!r}")
        for key, value in data.items():  # a NaN passes every `x <= 0` check: refuse non-finite numbers here
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{cls.__name__}.{key} must be finite, got {value!r}")
        try:
            return cls(**data)
        except TypeError as err:  # a field of the wrong type ("x" for a float) fails inside a check
            raise ValueError(f"{cls.__name__}: a field has the wrong type ({err})") from None

    def replace(self, **changes: Any):
        """Return a copy with ``changes`` applied; the copy is validated again.

        Fields that were derived (``head_dim``, ``mlp_dim``, ``fc_norm`` left as None and filled in)
        are derived again, so ``replace(embed_dim=384)`` also gets the 4x MLP width of 384.
        """
        self._check_keys(changes)
        for name, rule in type(self).derived.items():
            if name not in changes and getattr(self, name) == rule(self):
                changes[name] = None
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def _check_keys(cls, data: dict[str, Any]) -> None:
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            import difflib

            hints = [difflib.get_close_matches(k, known, n=1) for k in unknown]
            named = ", ".join(
                f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in zip(unknown, hints, strict=True)
            )
            raise ValueError(f"unknown {cls.__name__} field(s): {named}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input at the training size: ``(C, H, W)`` for images."""
        return (self.in_chans, *self.img_size)  # type: ignore[attr-defined]

    def describe(self) -> str:
        """A one-line description of the architecture's sizes (for summaries and listings)."""
        names = ("embed_dim", "depths", "depth", "num_heads", "mlp_dim", "patch_size", "window_size")
        data = self.to_dict()
        return ", ".join(f"{k}={data[k]}" for k in names if k in data)


# Fields that None fills in from others when a config is made (see _check_common).
_DERIVED = {
    "head_dim": lambda c: c.embed_dim // c.num_heads,
    "mlp_dim": lambda c: 4 * c.embed_dim,
    "fc_norm": lambda c: c.global_pool == "avg",
}


def _check_common(c: Any) -> None:
    """Checks shared by the 2-D and 1-D configs (transformer trunk, dropouts, pooling)."""
    for name in ("embed_dim", "depth", "num_heads", "patch_size"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if c.head_dim is None:
        if c.embed_dim % c.num_heads:
            raise ValueError(
                f"embed_dim ({c.embed_dim}) must be divisible by num_heads ({c.num_heads}); "
                "or set head_dim to decouple the attention width from embed_dim"
            )
        object.__setattr__(c, "head_dim", c.embed_dim // c.num_heads)
    elif c.head_dim <= 0:
        raise ValueError(f"head_dim must be positive, got {c.head_dim}")
    if c.mlp_dim is None:
        object.__setattr__(c, "mlp_dim", 4 * c.embed_dim)  # the paper's MLP ratio of 4
    elif c.mlp_dim <= 0:
        raise ValueError(f"mlp_dim must be positive, got {c.mlp_dim}")
    if c.num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = no head), got {c.num_classes}")
    for name in ("drop_rate", "attn_drop_rate", "pos_drop_rate", "head_drop_rate", "drop_path_rate"):
        value = getattr(c, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if c.norm_eps <= 0:
        raise ValueError(f"norm_eps must be positive, got {c.norm_eps}")
    if c.act not in _ACTS:
        raise ValueError(f"act must be one of {_ACTS}, got {c.act!r}")
    if c.init_values is not None and c.init_values <= 0:
        raise ValueError(f"init_values (LayerScale) must be positive or None, got {c.init_values}")
    if c.representation_size is not None and c.representation_size <= 0:
        raise ValueError(f"representation_size must be positive or None, got {c.representation_size}")
    if c.global_pool not in _POOLS:
        raise ValueError(f"global_pool must be one of {_POOLS}, got {c.global_pool!r}")
    if c.global_pool == "token" and not c.class_token:
        raise ValueError("global_pool='token' needs class_token=True; use 'avg' or 'map' without a class token")
    if c.fc_norm is None:
        # timm's rule: mean pooling normalises after pooling (fc_norm) instead of before (norm).
        object.__setattr__(c, "fc_norm", c.global_pool == "avg")


@dataclass(frozen=True)
class ViTConfig(ModelConfig):
    """Architecture of a :class:`~vitlab.models.vit.VisionTransformer`.

    Defaults are ViT-B/16 at 224 px with 1000 classes, as in Dosovitskiy et al. (2020).

    Attributes:
        img_size: Training image size ``(H, W)`` (an int means square). Sets the size of the learned
            position table; other sizes still run, the table is resampled at run time.
        patch_size: Side of the square patches, in pixels.
        in_chans: Image channels (3 for RGB, 1 for MNIST-like data).
        num_classes: Classifier outputs; 0 gives a model without a head (features only).
        embed_dim: Token width D.
        depth: Number of encoder blocks L.
        num_heads: Attention heads.
        head_dim: Width of each head; None means ``embed_dim // num_heads``. Set it to decouple the
            attention width from D, like lucidrains' ``dim_head``.
        mlp_dim: Hidden width of the MLP; None means ``4 * embed_dim``.
        qkv_bias: Bias in the q/k/v projection (True in the paper, False in vit-pytorch).
        qk_norm: LayerNorm on queries and keys per head (ViT-22B).
        init_values: LayerScale initial value (CaiT / DeiT III); None disables LayerScale.
        class_token: Prepend a learnable [CLS] token.
        reg_tokens: Number of register tokens (Darcet et al. 2023), placed after the class token.
        pos_embed: ``learn`` (1-D table, the paper's default), ``learn_2d`` (separate row and column
            tables of D/2 each, concatenated; the paper's appendix D.4), ``sincos`` (fixed 2-D
            sine-cosine) or ``none``.
        pos_embed_prefix: Whether the learned 1-D table has slots for the prefix (class and
            register) tokens, as in the original checkpoints; False is timm's ``no_embed_class``.
        global_pool: ``token`` ([CLS]), ``avg`` (mean of patch tokens), ``map`` (attention pooling
            with a learned query, SigLIP) or ``""`` (no pooling: the head sees every token).
        fc_norm: LayerNorm after pooling instead of before it; None picks timm's rule (True for avg).
        representation_size: Width of the tanh "pre-logits" layer of the original ImageNet-21k
            checkpoints; None for none.
        drop_rate: Dropout after every dense layer except the q/k/v projection (paper, appendix B.1).
        attn_drop_rate: Dropout on the attention probabilities.
        pos_drop_rate: Dropout right after the position embedding is added.
        head_drop_rate: Dropout before the classifier head.
        drop_path_rate: Stochastic depth of the last block; block ``i`` gets ``rate * i / (depth - 1)``.
        norm_eps: LayerNorm epsilon (1e-6 in timm and JAX, 1e-12 in Hugging Face, 1e-5 in PyTorch).
        act: MLP activation: exact ``gelu`` or the ``gelu_tanh`` approximation of the JAX models.
        patch_embed: ``conv`` (strided Conv2d, the paper) or ``lucid`` (rearrange -> LayerNorm ->
            Linear -> LayerNorm, as in lucidrains' vit-pytorch).
        dynamic_img_pad: Pad inputs whose sides are not multiples of the patch size (bottom/right,
            with zeros) instead of raising an error.
    """

    architecture: ClassVar[str] = "vit"
    derived: ClassVar[dict[str, Callable[[Any], Any]]] = _DERIVED

    img_size: tuple[int, int] | int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    head_dim: int | None = None
    mlp_dim: int | None = None
    qkv_bias: bool = True
    qk_norm: bool = False
    init_values: float | None = None
    class_token: bool = True
    reg_tokens: int = 0
    pos_embed: PosEmbed = "learn"
    pos_embed_prefix: bool = True
    global_pool: GlobalPool = "token"
    fc_norm: bool | None = None
    representation_size: int | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    pos_drop_rate: float = 0.0
    head_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    act: Act = "gelu"
    patch_embed: PatchEmbedKind = "conv"
    dynamic_img_pad: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        _check_common(self)
        if self.in_chans <= 0:
            raise ValueError(f"in_chans must be positive, got {self.in_chans}")
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"img_size {h}x{w} is not a multiple of patch_size {self.patch_size}; "
                "the training grid must tile the image exactly"
            )
        if self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.pos_embed not in _POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {_POS_EMBEDS}, got {self.pos_embed!r}")
        if self.pos_embed == "learn_2d" and self.embed_dim % 2:
            raise ValueError(f"pos_embed='learn_2d' needs an even embed_dim, got {self.embed_dim}")
        if self.pos_embed == "sincos" and self.embed_dim % 4:
            raise ValueError(f"pos_embed='sincos' needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.patch_embed not in _PATCH_EMBEDS:
            raise ValueError(f"patch_embed must be one of {_PATCH_EMBEDS}, got {self.patch_embed!r}")
        if self.global_pool == "map" and self.embed_dim % self.num_heads:
            raise ValueError(f"global_pool='map' needs embed_dim divisible by num_heads ({self.num_heads})")

    def describe(self) -> str:
        return (
            f"D={self.embed_dim}, depth={self.depth}, heads={self.num_heads}, mlp={self.mlp_dim}, "
            f"patch={self.patch_size}"
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(H/P, W/P)`` at the training size."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_prefix_tokens(self) -> int:
        """Class token plus register tokens."""
        return int(self.class_token) + self.reg_tokens


@dataclass(frozen=True)
class ViT1dConfig(ModelConfig):
    """Architecture of a :class:`~vitlab.models.vit_1d.VisionTransformer1d` for sequences.

    The 1-D ViT of lucidrains' ``vit_1d``: a ``(B, channels, seq_len)`` signal is cut into
    non-overlapping windows of ``patch_size`` steps, each flattened (``(p c)`` order) and linearly
    projected, then the same encoder blocks as the image model. Fields shared with
    :class:`ViTConfig` mean the same thing there.

    Attributes:
        seq_len: Length L of the input sequences (sizes the learned position table).
        patch_size: Steps per token.
        channels: Input channels C.
        patch_norm: LayerNorm before and after the patch projection, as the current ``vit_1d``.
    """

    architecture: ClassVar[str] = "vit_1d"
    derived: ClassVar[dict[str, Callable[[Any], Any]]] = _DERIVED

    seq_len: int = 256
    patch_size: int = 16
    channels: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    head_dim: int | None = None
    mlp_dim: int | None = None
    qkv_bias: bool = True
    qk_norm: bool = False
    init_values: float | None = None
    class_token: bool = True
    global_pool: Literal["token", "avg"] = "token"
    fc_norm: bool | None = None
    representation_size: int | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    pos_drop_rate: float = 0.0
    head_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    act: Act = "gelu"
    patch_norm: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool for the 1-D ViT must be 'token' or 'avg', got {self.global_pool!r}")
        if self.channels <= 0 or self.seq_len <= 0:
            raise ValueError(f"channels and seq_len must be positive, got {self.channels}, {self.seq_len}")
        if self.seq_len % self.patch_size:
            raise ValueError(f"seq_len ({self.seq_len}) must be a multiple of patch_size ({self.patch_size})")

    @property
    def num_patches(self) -> int:
        """Number of patch tokens ``seq_len / patch_size``."""
        return self.seq_len // self.patch_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: ``(channels, seq_len)``."""
        return (self.channels, self.seq_len)

    def describe(self) -> str:
        return (
            f"D={self.embed_dim}, depth={self.depth}, heads={self.num_heads}, mlp={self.mlp_dim}, "
            f"patch={self.patch_size}, seq_len={self.seq_len}"
        )
