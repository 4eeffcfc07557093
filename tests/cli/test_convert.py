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
    assert "format: timm" in text and "parity: source file run by timm vs vitlab: max |diff| = 0 ok" in text
    assert "parity inputs: 3 images (chelsea.jpg, coffee.jpg, rocket.jpg)" in text  # real photos, not noise
    assert text.count("parity:") == (2 if to == "vitlab" else 3) and "FAILED" not in text and "skipped" not in text
    assert text.count("vs source (timm): max |diff| = 0 ok") == text.count("parity:") - 1
    assert (tmp_path / out).exists()


def test_convert_hf_jax_vit_pytorch_and_deit_sources(capsys, tmp_path: Path) -> None:
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    code, text, _ = convert(
        capsys, tmp_path / "hf", "--from", "hf", "--to", "vitlab", "--out", tmp_path / "a.safetensors"
    )
    assert code == 0 and "source file run by transformers vs vitlab: max |diff| = 0 ok" in text

    ref = timm.create_model("vit_tiny_patch16_224", act_layer="gelu_tanh", depth=2)
    from vitlab import get_config

    export_jax(ref.state_dict(), get_config("vit_tiny_patch16_224", depth=2, act="gelu_tanh"), tmp_path / "j.npz")
    code, text, _ = convert(capsys, tmp_path / "j.npz", "--to", "hf", "--out", tmp_path / "hf2")
    assert code == 0 and "format: jax" in text and "source file run by timm (JAX reader) vs vitlab" in text
    assert "HF directory run by transformers vs source (timm (JAX reader))" in text and "FAILED" not in text

    lucid = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=3, dim=64, depth=2, heads=1, mlp_dim=64)
    torch.save(lucid.state_dict(), tmp_path / "lucid.pt")
    code, text, _ = convert(capsys, tmp_path / "lucid.pt", "--to", "vitlab", "--out", tmp_path / "l.safetensors")
    assert code == 0 and "format: vit_pytorch" in text and "source file run by vit-pytorch vs vitlab" in text
    assert "skipped" not in text

    deit = timm.create_model("deit3_small_patch16_224", depth=2)
    torch.save({"model": deit.state_dict()}, tmp_path / "deit.pth")
    code, text, _ = convert(
        capsys, tmp_path / "deit.pth", "--from", "deit", "--to", "timm", "--out", tmp_path / "d.safetensors"
    )
    assert code == 0 and "source file run by timm vs vitlab" in text and "timm file run by timm vs source" in text
    assert "FAILED" not in text and "skipped" not in text


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
    assert code == 0 and "FAILED" not in text
    # the mapping is proved on the weights as they are; the adapted file is held to vitlab's adapted model
    assert "source file run by timm vs vitlab: max |diff| = 0 ok" in text
    assert "vitlab file read back by vitlab vs vitlab's model: max |diff| = 0 ok" in text
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

    code, _, err = convert(
        capsys, timm_file, "--to", "vitlab", "--out", tmp_path / "x.safetensors", "--images", tmp_path / "none.png"
    )
    assert code == 2 and "--images" in err and "none.png: no such file" in err

    code, _, err = convert(capsys, timm_file, "--to", "hf", "--out", tmp_path / "y", "--from", "jax")
    assert code == 2 and "not a readable .npz" in err
    assert not (tmp_path / "x.safetensors").exists()


def _zero_one_tensor(fn):
    """Wrap a format's mapping so that it zeroes block 1's qkv weight: a wrong mapping, as a bug would make."""

    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        sd = out[0] if isinstance(out, tuple) else out
        sd["blocks.1.attn.qkv.weight"] = torch.zeros_like(sd["blocks.1.attn.qkv.weight"])
        return out

    return wrapped


def _write_source(kind: str, tmp_path: Path) -> Path:
    if kind == "timm":
        path = tmp_path / "src.safetensors"
        save_file(timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=4).state_dict(), str(path))
    elif kind == "hf":
        path = tmp_path / "hf"
        cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        transformers.ViTForImageClassification(cfg).save_pretrained(path)
    elif kind == "jax":
        from vitlab import get_config

        path = tmp_path / "src.npz"
        ref = timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=4)
        export_jax(ref.state_dict(), get_config("vit_tiny_patch16_224", depth=2, num_classes=4), path)
    else:
        path = tmp_path / "lucid.pt"
        lucid = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=3, dim=64, depth=2, heads=4, mlp_dim=64)
        torch.save(lucid.state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("kind", "mapping"),
    [("timm", "timm.rename_deit"), ("hf", "hf.read"), ("jax", "jax.read"), ("vit_pytorch", "vit_pytorch.convert")],
)
def test_convert_catches_a_wrong_mapping(capsys, monkeypatch, tmp_path: Path, kind: str, mapping: str) -> None:
    """The source library runs the source file itself, so a corrupted mapping is caught and exits 1."""
    import vitlab.weights as weights

    src = _write_source(kind, tmp_path)
    module_name, fn_name = mapping.split(".")
    module = getattr(weights, module_name) if module_name != "timm" else weights.loader.timm
    monkeypatch.setattr(module, fn_name, _zero_one_tensor(getattr(module, fn_name)))
    code, text, err = convert(
        capsys,
        src,
        "--to",
        "timm" if kind != "vit_pytorch" else "vitlab",
        "--out",
        tmp_path / ("o.pth" if kind != "vit_pytorch" else "o.safetensors"),
    )
    assert code == 1, text
    source_line = next(line for line in text.splitlines() if line.startswith("parity: source file run by"))
    assert "FAILED (> 0.0001)" in source_line
    diff = float(source_line.split("max |diff| = ")[1].split()[0])
    assert diff > 1e-3  # the difference itself is printed
    assert "parity check(s) FAILED" in err and "Traceback" not in err


def test_missing_heads_hint_is_spelt_for_the_command_line(capsys, tmp_path: Path) -> None:
    """The loader's "pass model=NAME or num_heads=..." is Python; the CLI says --model NAME / --num-heads N."""
    lucid = vit_pytorch.ViT(
        image_size=32, patch_size=8, num_classes=3, dim=48, depth=1, heads=3, mlp_dim=96, dim_head=16
    )
    torch.save(lucid.state_dict(), tmp_path / "lucid.pth")  # D=48, inner 48: no size and no 64-wide heads fit
    code = main(["convert", str(tmp_path / "lucid.pth"), "--to", "vitlab", "--out", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "pass --model NAME or --num-heads N" in err and "num_heads=" not in err, err
    code = main(["predict", str(tmp_path / "lucid.pth"), "--model", str(tmp_path / "lucid.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "num_heads=" not in err and "vitlab convert" in err and "--num-heads N" in err, err
