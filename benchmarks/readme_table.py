"""The README's inference table, regenerated from a saved ``benchmarks/infer.py`` output.

    python benchmarks/readme_table.py benchmarks/results/infer_cpu2_peers.txt            # print it
    python benchmarks/readme_table.py benchmarks/results/infer_cpu2_peers.txt --write README.md

``--write`` replaces what lies between the ``<!-- infer-table -->`` and ``<!-- /infer-table -->`` markers.
Every number in the table is read from the file; only the ranges below it are computed.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

START, END = "<!-- infer-table -->", "<!-- /infer-table -->"
LINE = re.compile(
    r"^(?P<model>\S+)\s+(?P<batch>\d+)\s+(?P<mode>fp32|bf16|int8)\s+(?P<who>.+?)\s+(?P<ips>[\d.]+)\s+"
    r"(?P<best>\S+)\s+(?P<cross>\S+)\s+(?P<peak>\S+)\s+(?P<diff>\S+)$"
)
SHORT = {"vit_tiny_patch16_224": "Ti/16", "vit_small_patch16_224": "S/16", "vit_base_patch16_224": "B/16"}
# contender names per mode: timm as users run it, compiled with freezing, set up by hand in eager mode
AS_RUN = {"fp32": "timm", "bf16": "timm autocast", "int8": "timm int8 all Linear"}
COMPILED = {"fp32": "timm compiled", "bf16": "timm .bfloat16() compiled", "int8": "timm int8 recipe compiled"}
TUNED = {"bf16": "timm .bfloat16()", "int8": "timm int8 vitlab recipe"}


def read(path: Path) -> dict[tuple[str, int, str], dict[str, dict[str, str]]]:
    """``(model, batch, mode) -> contender -> the printed columns``, in file order."""
    rows: dict[tuple[str, int, str], dict[str, dict[str, str]]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        if m := LINE.match(line):
            rows[(m["model"], int(m["batch"]), m["mode"])][m["who"]] = m.groupdict()
    return rows


def table(path: Path) -> str:
    rows = read(path)
    out = [
        "| model | batch | mode | timm as users run it | timm compiled | timm eager, tuned | vitlab "
        "| fastest peer | **vitlab / fastest peer** | vitlab eager, compiled | cross-mode: vitlab / timm fp32 "
        "| vitlab % of mode peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = defaultdict(list)
    for (model, batch, mode), who in rows.items():
        peers = {k: float(v["ips"]) for k, v in who.items() if not k.startswith("vitlab")}
        fastest = max(peers, key=peers.__getitem__)
        vitlab = who["vitlab"]
        ratios[mode].append(float(vitlab["best"].rstrip("x")))
        ips = {k: v["ips"] for k, v in who.items()}
        cells = [
            SHORT.get(model, model), batch, mode,
            *(ips.get(name, "-") for name in (AS_RUN[mode], COMPILED[mode], TUNED.get(mode))),
            vitlab["ips"], f"{fastest} ({peers[fastest]:.2f})", f"**{vitlab['best']}**",
            ips.get("vitlab eager, compiled", "-"), vitlab["cross"], vitlab["peak"],
        ]  # fmt: skip
        out.append("| " + " | ".join(map(str, cells)) + " |")
    summary = ", ".join(f"{mode} {min(r):.2f}-{max(r):.2f}x" for mode, r in ratios.items())
    return "\n".join(out) + f"\n\nvitlab / fastest peer in the same mode, range over the rows: {summary}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a saved output of benchmarks/infer.py")
    parser.add_argument("--write", type=Path, help="a markdown file with the markers to update in place")
    args = parser.parse_args()
    text = table(args.results)
    if not args.write:
        print(text)
        return
    doc = args.write.read_text()
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    args.write.write_text(f"{head}{START}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
