"""DeiT's distillation: the losses against the paper's formulas written out by hand, the teachers vitlab reads,
and a whole ``fit`` with a teacher."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import vitlab
from vitlab.train import ConfigError, TrainState, load_config, train_one_epoch
from vitlab.train.distill import Distiller, distillation_loss, load_teacher
from vitlab.train.loop import fit
from vitlab.weights import load_checkpoint, save

K = 5  # classes


class ToyTeacher(nn.Module):
    """A fixed linear classifier of the flattened image, with dropout to prove it runs in eval mode."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(in_features, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.flatten(1)))


def student() -> vitlab.VitlabModel:
    model = vitlab.create_model(
        "deit_tiny_distilled_patch16_224", img_size=32, depth=2, embed_dim=64, num_heads=2, num_classes=K
    )
    model.set_distilled_training(True)
    return model


def one_sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, distiller: Distiller | None) -> tuple[float, dict]:
    """One plain SGD step (lr 1, no momentum or decay) through ``train_one_epoch``: (its loss, the gradients)."""
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    logged = []
    train_one_epoch(
        model,
        [(x, y)],
        optimizer,
        TrainState(),
        lr_fn=lambda step: 1.0,
        accum_steps=1,
        device=torch.device("cpu"),
        on_step=logged.append,
        distill=distiller,
    )
    grads = {k: before[k] - p.detach() for k, p in model.named_parameters()}  # p_new = p_old - 1 * grad
    return logged[0]["loss"], grads


def hand_gradients(model: nn.Module, loss: torch.Tensor) -> dict:
    loss.backward()
    return {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in model.named_parameters()}


def assert_same(grads: dict, expected: dict) -> None:
    assert grads.keys() == expected.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, ToyTeacher]:
    x = torch.randn(6, 3, 32, 32)
    y = torch.randint(0, K, (6,))
    teacher = ToyTeacher(3 * 32 * 32)
    return x, y, teacher


def test_hard_distillation_is_the_papers_loss(batch) -> None:
    """L = 1/2 CE(cls_logits, y) + 1/2 CE(dist_logits, argmax teacher), both heads trained, teacher untouched."""
    x, y, teacher = batch
    model = student()
    reference = copy.deepcopy(model).train()
    teacher_before = copy.deepcopy(teacher.state_dict())
    frozen = teacher.eval().requires_grad_(False)

    cls_logits, dist_logits = reference(x)  # train mode + distilled training: both heads
    with torch.no_grad():
        teacher_labels = frozen(x).argmax(dim=1)
    expected = 0.5 * F.cross_entropy(cls_logits, y) + 0.5 * F.cross_entropy(dist_logits, teacher_labels)

    loss, grads = one_sgd_step(model, x, y, Distiller(frozen, "hard", tau=1.0, alpha=0.5))
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert_same(grads, hand_gradients(reference, expected))
    assert grads["head.weight"].abs().sum() > 0 and grads["head_dist.weight"].abs().sum() > 0
    assert grads["dist_token"].abs().sum() > 0
    for k, v in frozen.state_dict().items():
        torch.testing.assert_close(v, teacher_before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in frozen.parameters())


def test_soft_distillation_is_deits_kl(batch) -> None:
    """(1 - alpha) CE(cls, y) + alpha tau^2 KL(teacher || student at temperature tau), DeiT's normalisation."""
    x, y, teacher = batch
    tau, alpha = 3.0, 0.3
    model = student()
    reference = copy.deepcopy(model).train()
    frozen = teacher.eval().requires_grad_(False)

    cls_logits, dist_logits = reference(x)
    with torch.no_grad():
        t = frozen(x)
    # DeiT's losses.py, as written there:
    T = tau
    kl = F.kl_div(F.log_softmax(dist_logits / T, dim=1), F.log_softmax(t / T, dim=1), reduction="sum", log_target=True)
    deit_kl = kl * (T * T) / dist_logits.numel()
    # The same sum written out: sum_b sum_k p_t (log p_t - log p_s), over B * K.
    p_t, log_p_s = F.softmax(t / tau, dim=1), F.log_softmax(dist_logits / tau, dim=1)
    by_hand = (p_t * (p_t.log() - log_p_s)).sum() * tau * tau / dist_logits.numel()
    torch.testing.assert_close(deit_kl, by_hand, rtol=1e-5, atol=1e-7)
    expected = (1 - alpha) * F.cross_entropy(cls_logits, y) + alpha * deit_kl

    loss, grads = one_sgd_step(model, x, y, Distiller(frozen, "soft", tau=tau, alpha=alpha))
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert_same(grads, hand_gradients(reference, expected))


def test_a_student_with_one_head_learns_both_terms_with_it(batch) -> None:
    """Any other model: its one output takes the labels' and the teacher's loss (no distillation token)."""
    x, y, teacher = batch
    model = vitlab.create_model("vit_tiny_patch4_32", depth=1, embed_dim=32, num_heads=2, num_classes=K)
    reference = copy.deepcopy(model).train()
    frozen = teacher.eval().requires_grad_(False)
    logits = reference(x)
    with torch.no_grad():
        teacher_labels = frozen(x).argmax(dim=1)
    expected = 0.75 * F.cross_entropy(logits, y) + 0.25 * F.cross_entropy(logits, teacher_labels)
    loss, grads = one_sgd_step(model, x, y, Distiller(frozen, "hard", alpha=0.25))
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert_same(grads, hand_gradients(reference, expected))


def test_without_a_teacher_a_distilled_deit_trains_on_the_mean_of_its_heads(batch) -> None:
    x, y, _ = batch
    model = student()
    model.set_distilled_training(False)
    reference = copy.deepcopy(model).train()
    expected = F.cross_entropy(reference(x), y)  # timm: the mean of the two heads outside distilled training
    loss, _ = one_sgd_step(model, x, y, None)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_distillation_loss_rejects_an_unknown_kind_and_mismatched_teachers() -> None:
    with pytest.raises(ValueError, match="'hard' or 'soft'"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), "warm", 1.0)
    distiller = Distiller(nn.Linear(4, 7).eval(), "hard")
    with pytest.raises(ValueError, match=r"teacher gives logits \(2, 7\), the student \(2, 3\)"):
        distiller(torch.zeros(2, 4), torch.tensor(0.0), torch.zeros(2, 3))


# ------------------------------------------------------------------------------------------ teachers


def test_torchvision_teacher_with_its_weights(tmp_path: Path) -> None:
    import torchvision

    ref = torchvision.models.get_model("resnet18", num_classes=10).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "r18.pth")  # torchvision's training scripts wrap it so
    teacher = load_teacher(f"torchvision:resnet18:{tmp_path / 'r18.pth'}", 10, (3, 32, 32), torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), ref(x), rtol=0, atol=0)

    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="torchvision:ARCH:PATH"):
        load_teacher("torchvision:resnet18", 10, (3, 32, 32), cpu)
    with pytest.raises(ConfigError, match="no such file"):
        load_teacher(f"torchvision:resnet18:{tmp_path / 'nope.pth'}", 10, (3, 32, 32), cpu)
    with pytest.raises(ConfigError, match="cannot build 'resnet_nope'"):
        load_teacher(f"torchvision:resnet_nope:{tmp_path / 'r18.pth'}", 10, (3, 32, 32), cpu)
    with pytest.raises(ConfigError, match=r"size mismatch for fc\.weight"):  # a 10-class teacher, 7-class data
        load_teacher(f"torchvision:resnet18:{tmp_path / 'r18.pth'}", 7, (3, 32, 32), cpu)
    with pytest.raises(ConfigError, match=r"does not take the student's inputs \(1, 28, 28\)"):
        load_teacher(f"torchvision:resnet18:{tmp_path / 'r18.pth'}", 10, (1, 28, 28), cpu)


def test_vitlab_teachers_are_checkpoints_or_names(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    model = vitlab.create_model("vit_tiny_patch7_28", depth=1, num_classes=10).eval()
    path = save(model, tmp_path / "teacher.safetensors")
    teacher = load_teacher(str(path), 10, (1, 28, 28), cpu)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model(x), rtol=0, atol=0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    # A distilled DeiT teaches with the mean of its heads (eval mode), whatever its training flag.
    deit = load_teacher("deit_tiny_distilled_patch16_224", 1000, (3, 224, 224), cpu)
    assert isinstance(deit(torch.randn(1, 3, 224, 224)), torch.Tensor)
    with pytest.raises(ConfigError, match=r"gives \(1, 10\) for one image; the student needs \(1, 3\)"):
        load_teacher(str(path), 3, (1, 28, 28), cpu)
    with pytest.raises(ConfigError, match="no such checkpoint file or directory"):
        load_teacher(str(tmp_path / "missing.safetensors"), 10, (1, 28, 28), cpu)


def test_recipe_section() -> None:
    cfg = load_config(None, ["train.distill.teacher=t.safetensors", "train.distill.kind=soft", "train.distill.tau=3"])
    d = cfg.train.distill
    assert (d.teacher, d.kind, d.tau, d.alpha) == ("t.safetensors", "soft", 3.0, 0.5)
    assert load_config(None).train.distill.teacher is None  # off by default
    for override, message in [
        ("train.distill.kind=warm", r"train.distill.kind must be one of \['hard', 'soft'\]"),
        ("train.distill.alpha=1.5", r"train.distill.alpha must be in \[0, 1\]"),
        ("train.distill.tau=0", "train.distill.tau must be positive"),
        ("train.distill.teachr=x", "did you mean train.distill.teacher"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])


def test_shipped_recipe_parses() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "distill_mnist.yaml")
    assert cfg.model.name == "deit_tiny_distilled_patch16_224" and cfg.train.distill.teacher
    assert vitlab.create_model(cfg.model.name, **cfg.model.overrides, in_chans=1, num_classes=10, device="meta")


# ------------------------------------------------------------------------------------------ fit


def test_fit_with_a_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distilled DeiT student, a vitlab teacher: both heads train, the run records the teacher, the best
    checkpoint is a DeiT again; a teacher that cannot teach is refused before anything is written."""
    rng = np.random.default_rng(0)  # MNIST-shaped noise: this checks the plumbing, not what is learnt
    np.savez(
        tmp_path / "mnist.npz",
        x_train=rng.integers(0, 256, (400, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, 400),
        x_test=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, 100),
    )
    teacher_model = vitlab.create_model("vit_tiny_patch7_28", depth=1, embed_dim=32, num_heads=2)
    teacher = save(teacher_model, tmp_path / "t.safetensors")
    tiny = {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
    recipe = {
        "model": {"name": "deit_tiny_distilled_patch16_224", "overrides": {**tiny, "img_size": 28, "patch_size": 7}},
        "data": {"path": str(tmp_path / "mnist.npz"), "workers": 0},
        "schedule": {"epochs": 1, "warmup_epochs": 0},
        "train": {"batch_size": 64, "distill": {"teacher": str(teacher), "kind": "hard"}},
        "run": {"out_dir": str(tmp_path / "run"), "log_every_steps": 1},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    calls = []
    original = Distiller.__call__

    def spy(self, x, label_loss, dist_logits):
        calls.append((self.teacher.training, dist_logits.requires_grad))
        return original(self, x, label_loss, dist_logits)

    monkeypatch.setattr(Distiller, "__call__", spy)
    result = fit(load_config(tmp_path / "r.yaml"), progress=False)
    assert result["steps"] == 5 and "test_acc" in result
    assert calls == [(False, True)] * 5  # every micro-batch, the teacher in eval mode
    run = tmp_path / "run"
    assert f"distilled from {teacher} (hard" in (run / "report.md").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["distill"]["teacher"] == str(teacher)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert all(np.isfinite(r["train_loss"]) for r in records if "train_loss" in r)
    best = load_checkpoint(run / "best.safetensors").model
    assert best.architecture == "deit" and best.cfg.distilled

    recipe["train"]["distill"]["teacher"] = "torchvision:resnet18:" + str(teacher)  # 3-channel CNN, 1-channel data
    recipe["run"]["out_dir"] = str(tmp_path / "refused")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"train\.distill\.teacher"):
        fit(load_config(tmp_path / "bad.yaml"), progress=False)
    assert not (tmp_path / "refused" / "config.yaml").exists()
