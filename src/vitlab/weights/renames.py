"""Name tables between two checkpoint layouts, written once and used in both directions.

A rule is a pair of templates, ``(name in layout A, name in layout B)``. ``{i}``, ``{j}``, ``{k}`` stand for
block or stage numbers (digits, the same in both names); a template ending in ``.`` matches a prefix and the
rest of the name is carried over (``stem.bn.`` covers ``stem.bn.weight``, ``stem.bn.running_mean``, ...).
Rules are tried in order; the first that matches wins. Families whose Hugging Face names are a plain
renaming of vitlab's (MobileViT, CvT) describe it with one table instead of two hand-written loops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

Rule = tuple[str, str]


@cache
def _pattern(template: str) -> re.Pattern[str]:
    prefix = template.endswith(".")
    body = re.escape(template)
    for key in "ijk":
        body = body.replace(re.escape("{" + key + "}"), f"(?P<{key}>\\d+)")
    return re.compile("^" + body + ("(?P<rest>.+)" if prefix else "") + "$")


def rename(name: str, rules: Sequence[Rule], reverse: bool = False, inner: Sequence[Rule] = ()) -> str | None:
    """``name`` in layout A -> layout B by the first matching rule (B -> A with ``reverse``); None if none matches.

    ``inner``: renames of the parts inside a module, applied left to right to the rest a prefix rule carries
    over (``expand_1x1.convolution.weight`` -> ``conv1_1x1.conv.weight``).
    """
    for a, b in rules:
        src, dst = (b, a) if reverse else (a, b)
        m = _pattern(src).match(name)
        if m:
            groups = m.groupdict()
            rest = groups.pop("rest", None) or ""
            return dst.format(**groups) + _inner(rest, inner, reverse)
    return None


def _inner(rest: str, rules: Sequence[Rule], reverse: bool) -> str:
    out = []
    while rest:
        for a, b in rules:
            src, dst = (b, a) if reverse else (a, b)
            if rest.startswith(src):
                out.append(dst)
                rest = rest[len(src) :]
                break
        else:
            out.append(rest)
            break
    return "".join(out)
