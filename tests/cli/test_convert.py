"""``vitlab convert`` on each kind of file, with its parity report, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import transformers
import vit_pytorch
from safetensors.torch import save_file

from vitlab.cli import main
from vitlab.weights import export_jax

pytestmark = pytest.mark.parity


def convert(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def timm_file(tmp_path: Path) -> Path:
    path = tmp_path / "timm.safetensors"
    save_file(timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=4).state_dict(), str(path))
    return path


@pytest.mark.parametrize(
    ("to", "out"), [("vitlab", "m.safetensors"), ("hf", "hf"), ("timm", "t.pth"), ("jax", "j.npz")]
)
def test_convert_timm_to_each(capsys, tmp_path: Path, timm_file: Path, to: str, out: str) -> None:
    code, text, _ = convert(capsys, timm_file, "--to", to, "--out", tmp_path / out)
    assert code == 0, text
    assert "format: timm" in text and "parity: source (timm) vs vitlab: max |diff| = 0 ok" in text
    assert text.count("parity:") >= 2 and "FAILED" not in text
    assert (tmp_path / out).exists()


def test_convert_hf_jax_vit_pytorch_and_deit_sources(capsys, tmp_path: Path) -> None:
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    code, text, _ = convert(
        capsys, tmp_path / "hf", "--from", "hf", "--to", "vitlab", "--out", tmp_path / "a.safetensors"
    )
    assert code == 0 and "source (transformers) vs vitlab: max |diff| = 0 ok" in text

    ref = timm.create_model("vit_tiny_patch16_224", act_layer="gelu_tanh", depth=2)
    from vitlab import get_config

    export_jax(ref.state_dict(), get_config("vit_tiny_patch16_224", depth=2, act="gelu_tanh"), tmp_path / "j.npz")
    code, text, _ = convert(capsys, tmp_path / "j.npz", "--to", "hf", "--out", tmp_path / "hf2")
    assert code == 0 and "format: jax" in text and "HF directory run by transformers" in text

    lucid = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=3, dim=64, depth=2, heads=1, mlp_dim=64)
    torch.save(lucid.state_dict(), tmp_path / "lucid.pt")
    code, text, _ = convert(capsys, tmp_path / "lucid.pt", "--to", "vitlab", "--out", tmp_path / "l.safetensors")
    assert code == 0 and "format: vit_pytorch" in text

    deit = timm.create_model("deit3_small_patch16_224", depth=2)
    torch.save({"model": deit.state_dict()}, tmp_path / "deit.pth")
    code, text, _ = convert(
        capsys, tmp_path / "deit.pth", "--from", "deit", "--to", "timm", "--out", tmp_path / "d.safetensors"
    )
    assert code == 0 and "timm file run by timm" in text


def test_convert_adapts_size_and_classes(capsys, tmp_path: Path, timm_file: Path) -> None:
    code, text, _ = convert(
        capsys,
        timm_file,
        "--to",
        "vitlab",
        "--out",
        tmp_path / "m.safetensors",
        "--img-size",
        "384",
        "--num-classes",
        "10",
    )
    assert code == 0
    assert "resampled position embedding 14x14 -> 24x24" in text and "zero-initialised one for 10 classes" in text
    assert "img=384x384 classes=10" in text


def test_convert_errors(capsys, tmp_path: Path, timm_file: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    code, _, err = convert(capsys, tmp_path / "evil.pth", "--to", "vitlab", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "refused" in err and "evil.pth" in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()

    data = timm_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    code, _, err = convert(capsys, tmp_path / "cut.safetensors", "--to", "vitlab", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "truncated or corrupt" in err and "cut.safetensors" in err

    code, _, err = convert(capsys, timm_file, "--to", "hf", "--out", tmp_path / "y", "--from", "jax")
    assert code == 2 and "not a readable .npz" in err
    assert not (tmp_path / "x.safetensors").exists()
