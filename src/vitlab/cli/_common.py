"""Argument helpers shared by subcommands (no heavy imports here)."""

from __future__ import annotations

import argparse


def add_img_size(parser: argparse.ArgumentParser, help: str = "input size: N (square) or H W") -> None:
    parser.add_argument("--img-size", type=int, nargs="+", metavar="N", help=help)


def img_size(values: list[int] | None) -> int | tuple[int, int] | None:
    """``--img-size N`` -> N, ``--img-size H W`` -> (H, W); more numbers are an error."""
    if not values:
        return None
    if len(values) > 2:
        raise ValueError(f"--img-size takes N or H W, got {len(values)} numbers")
    return (values[0], values[1]) if len(values) == 2 else values[0]


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "int8"),
        help="fp32, bf16 weights, or int8 dynamic quantization of the Linear layers (CPU)",
    )


def require_attention(model, name: str) -> None:
    """Refuse, in one line, a model whose family has no global (T, T) attention map (with the family's reason)."""
    if not model.supports_attention:
        raise ValueError(
            f"{name}: the {model.architecture!r} model has no global attention map: {model.attention_note}"
        )


def cli_spelling(message: str, command: str) -> str:
    """A library hint in Python spelling (``pass model=NAME or num_heads=...``) as the command line spells it:
    ``vitlab convert`` takes ``--model NAME`` / ``--num-heads N``; other commands read a file converted first."""
    if command != "convert":
        message = message.replace(
            "pass model=NAME or num_heads=...",
            "convert the file first: vitlab convert FILE --to vitlab --out OUT --model NAME (or --num-heads N)",
        ).replace("pass num_heads=...", "vitlab convert takes --num-heads N")
    return message.replace("model=NAME", "--model NAME").replace("num_heads=...", "--num-heads N")
