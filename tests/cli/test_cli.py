"""The ``vitlab`` command line: output, errors and a light ``--help``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vitlab.cli import build_parser, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_counts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "vit_base")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("vit_base_patch16_224 "))
    assert "86,567,656" in line and "17.56" in line
    assert "vit_base_patch16_384" in out and "86,859,496" in out
    assert "vit_small" not in out


def test_models_names_and_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--names", "vit_*_patch14_224")
    assert code == 0 and out.split() == [
        "vit_large_patch14_224",
        "vit_huge_patch14_224",
        "vit_giant_patch14_224",
        "vit_gigantic_patch14_224",
    ]
    code, _, err = run(capsys, "models", "resnet")
    assert code == 2 and "no model matches 'resnet'" in err


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", "vit_base_patch16_384")
    assert code == 0
    assert "Total params: 86,859,496" in out
    assert "torchsummary would print 'Total params: 86,415,592'" in out
    assert "cls_token, pos_embed" in out
    assert "MACs per image: 55.48" in out


def test_summary_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", "vit_tiny_patch16_224", "--img-size", "160", "320", "--num-classes", "10")
    assert code == 0 and "[-1, 201, 192]" in out and "[-1, 10]" in out
    code, out, _ = run(capsys, "summary", "vit_tiny_patch16_224", "--depth", "1")
    assert code == 0 and "blocks.0" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "vit_bsae_patch16_224"], "did you mean vit_base_patch16_224"),
        (["summary", "vit_base_patch16_224", "--img-size", "225"], "not a multiple of patch_size 16"),
        (["summary", "vit_base_patch16_224", "--num-classes", "-1"], "num_classes must be >= 0"),
        (["summary", "vit_base_patch16_224", "--img-size", "1", "2", "3"], "--img-size takes N or H W"),
    ],
)
def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"models", "summary"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: vitlab " + name)


def test_help_does_not_import_torch() -> None:
    """`vitlab --help` and every subcommand's --help stay fast: torch is only imported to do work."""
    code = (
        "import sys\n"
        "from vitlab.cli import main\n"
        "from vitlab.cli import COMMANDS\n"
        "names = [c.__name__.rsplit('.', 1)[1] for c in COMMANDS]\n"
        "names = ['eval' if n == 'evaluate' else n for n in names]\n"
        "for argv in [['--help']] + [[n, '--help'] for n in names]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, argv\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vitlab.cli", "models", "--names", "patch7"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.split() == ["vit_tiny_patch7_28"]
