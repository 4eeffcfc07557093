"""Streaming writers for predictions: text for people, JSON / JSON Lines / CSV for machines.

Each record is written and flushed as soon as it is known, so an interrupted run keeps what it
finished. The JSON writer closes its array even when the run is interrupted by an exception
(Ctrl-C included); ``jsonl`` survives anything, one complete object per line.
"""

from __future__ import annotations

import csv
import json
from typing import TextIO

from .predictor import Prediction

FORMATS = ("text", "json", "jsonl", "csv")


class PredictionWriter:
    """Write :class:`Prediction` records to a stream in one of :data:`FORMATS`. Use as a context manager."""

    def __init__(self, stream: TextIO, fmt: str = "text", topk: int = 5) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.stream, self.fmt, self.topk, self.count = stream, fmt, topk, 0
        self._csv = csv.writer(stream) if fmt == "csv" else None

    def __enter__(self) -> PredictionWriter:
        if self.fmt == "json":
            self.stream.write("[")
        elif self._csv is not None:
            header = ["file"] + [f"{kind}{r}" for r in range(1, self.topk + 1) for kind in ("label", "index", "prob")]
            self._csv.writerow([*header, "error"])
        return self

    def write(self, p: Prediction) -> None:
        if self.fmt == "text":
            if p.error:
                self.stream.write(f"{p.source}\n  error: {p.error}\n")
            else:
                lines = [
                    f"  {r}: {label} --- {prob:.4f}"
                    for r, (label, prob) in enumerate(zip(p.labels, p.probs, strict=True))
                ]
                self.stream.write(p.source + "\n" + "\n".join(lines) + "\n")
        elif self.fmt in ("json", "jsonl"):
            record = json.dumps(p.to_dict() if p.error else {k: v for k, v in p.to_dict().items() if k != "error"})
            sep = "\n" if self.fmt == "jsonl" else ("\n  " if self.count == 0 else ",\n  ")
            self.stream.write((sep + record) if self.fmt == "json" else (record + sep))
        else:
            row: list[object] = [p.source]
            for r in range(self.topk):
                row += [p.labels[r], p.indices[r], f"{p.probs[r]:.6f}"] if r < len(p.labels) else ["", "", ""]
            self._csv.writerow([*row, p.error or ""])  # type: ignore[union-attr]
        self.count += 1
        self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n")
        self.stream.flush()
