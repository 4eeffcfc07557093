"""``fit``: a whole training run from a :class:`TrainConfig`, resumable, single-process or DDP.

Run directory::

    config.yaml           the resolved recipe (``--resume`` reads it back)
    metrics.jsonl         one JSON record per logged step and per epoch
    curves.png            loss, accuracy and learning rate, redrawn every epoch
    checkpoints/last.pt   everything a bit-exact resume needs (atomic)
    best.safetensors      best validation accuracy, vitlab format (config, preprocessing, class names)
    last.safetensors      the final weights, vitlab format
    report.md             what was trained, on what, how well, how fast
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import channel_stats, load_splits
from ..data.loaders import EpochBatchSampler, TransformDataset
from ..data.transforms import eval_transform, train_transform
from ..models import create_model
from ..weights import Preprocessing, load_checkpoint, save
from .checkpoint import load_train_checkpoint, save_train_checkpoint, set_rng_state
from .config import ConfigError, TrainConfig
from .distill import Distiller, load_teacher
from .distributed import Dist, init_distributed
from .engine import TrainState, evaluate, train_one_epoch
from .optim import build_optimizer
from .plots import plot_curves
from .rundir import RunDirLock, prepare_run_dir, read_metrics, write_metrics, write_text
from .schedule import lr_at

log = logging.getLogger(__name__)


def _build_model(cfg: TrainConfig, num_classes: int, channels: int):
    over = dict(cfg.model.overrides)
    over.setdefault("in_chans", channels)
    if cfg.init_from:
        loaded = load_checkpoint(cfg.init_from, model=cfg.model.name, num_classes=num_classes, **over)
        return loaded.model, str(loaded.report)
    return create_model(cfg.model.name, num_classes=num_classes, **over), None


def _distiller(cfg: TrainConfig, model, num_classes: int, pre: Preprocessing, device: torch.device) -> Distiller | None:
    """The teacher and DeiT's loss of ``train.distill`` (None without a teacher); a distilled DeiT student is
    switched to returning both heads' logits while training (timm's ``set_distilled_training``)."""
    d = cfg.train.distill
    if d.teacher is None:
        return None
    teacher = load_teacher(d.teacher, num_classes, model.input_shape, device, (pre.mean, pre.std))
    if hasattr(model, "set_distilled_training"):
        model.set_distilled_training(True)
    log.info("distilling from %s (%s, alpha %g, tau %g)", d.teacher, d.kind, d.alpha, d.tau)
    return Distiller(teacher, d.kind, d.tau, d.alpha)


def _interactive() -> bool:
    """A progress bar only on a terminal: redirected to a file (CI, ``make demo > log``) its redraws made a
    290 KB log; there each epoch prints one line instead."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def _loader(dataset, sampler, workers: int) -> DataLoader:
    # An explicit generator: creating the iterator must not draw from the global RNG (resume exactness).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, generator=torch.Generator().manual_seed(0))


def _mixer(cfg: TrainConfig, num_classes: int):
    from torchvision.transforms import v2

    mixes = []
    if cfg.augment.mixup > 0:
        mixes.append(v2.MixUp(alpha=cfg.augment.mixup, num_classes=num_classes))
    if cfg.augment.cutmix > 0:
        mixes.append(v2.CutMix(alpha=cfg.augment.cutmix, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def fit(cfg: TrainConfig, resume: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a model as ``cfg`` says; returns the final metrics.

    Args:
        cfg: The recipe.
        resume: A run directory to continue from its ``checkpoints/last.pt``, exactly where it stopped.
        progress: Show a progress bar (rank 0 only).

    Raises:
        ConfigError / DatasetError / CheckpointError: bad recipe, data or ``init_from``, before any step runs.
    """
    dist = init_distributed(cfg.run.device)
    out = Path(resume) if resume else Path(cfg.run.out_dir)
    existed = out.exists()
    lock = RunDirLock(out).acquire() if dist.is_main else None  # released when the process ends, however
    try:
        return _fit(cfg, dist, out, resume is not None, progress)
    finally:
        if lock is not None:
            lock.release()
            if not existed and [p.name for p in out.iterdir()] == [".lock"]:  # refused before writing: leave no trace
                lock.path.unlink()
                out.rmdir()


def _fit(cfg: TrainConfig, dist: Dist, out: Path, resume: bool, progress: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.train.seed)

    # ---- the run directory (locked above), data and model: all checked before anything is written
    if dist.is_main:
        prepare_run_dir(out, resume, cfg.run.overwrite)
    splits = load_splits(cfg.data.path, cfg.data.format, cfg.data.val_fraction, cfg.train.seed, cfg.data.train_subset)
    model, init_report = _build_model(cfg, len(splits.class_names), splits.channels)
    mode = "L" if model.cfg.in_chans == 1 else "RGB"
    mean, std = channel_stats(splits.train, mode, seed=cfg.train.seed)
    pre = Preprocessing(
        input_size=(model.cfg.in_chans, *model.cfg.img_size), crop_pct=1.0, interpolation="bilinear", mean=mean, std=std
    )
    a = cfg.augment
    train_ds = TransformDataset(
        splits.train,
        train_transform(
            pre, a.random_resized_crop, a.translate, a.hflip, a.rand_augment, a.trivial_augment, a.random_erasing
        ),
        mode,
        seed=cfg.train.seed,
    )
    micro_global = cfg.train.batch_size // cfg.train.accum_steps
    if cfg.train.batch_size % (cfg.train.accum_steps * dist.world):
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} must be divisible by accum_steps x processes "
            f"({cfg.train.accum_steps} x {dist.world})"
        )
    sampler = EpochBatchSampler(
        len(train_ds), micro_global, cfg.train.seed, dist.rank, dist.world, multiple_of=cfg.train.accum_steps
    )
    steps_per_epoch = sampler.batches() // cfg.train.accum_steps
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than the {len(train_ds)} training images")
    total_steps = cfg.schedule.epochs * steps_per_epoch
    warmup = round(cfg.schedule.warmup_epochs * steps_per_epoch)

    def lr_fn(step: int) -> float:
        return lr_at(step, cfg.optim.lr, total_steps, warmup, cfg.schedule.min_lr)

    model.to(dist.device)
    distiller = _distiller(cfg, model, len(splits.class_names), pre, dist.device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.train.ema_decay else None
    o = cfg.optim
    optimizer = build_optimizer(model, o.name, o.lr, o.weight_decay, o.betas, o.momentum, o.layer_decay)
    state = TrainState()
    if resume:
        ckpt = load_train_checkpoint(out / "checkpoints" / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt["ema"] is not None:
            ema.load_state_dict(ckpt["ema"])
        state = TrainState(**ckpt["state"])
        set_rng_state(ckpt["rng"])
        _trim_metrics(out / "metrics.jsonl", state.step, dist)
    elif dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_text(out / "metrics.jsonl", "")
    train_model = model
    if dist.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=dist.device_ids)
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    eval_ds = TransformDataset(splits.val, eval_transform(pre), mode)
    eval_batches = EpochBatchSampler(len(eval_ds), cfg.train.eval_batch_size, shuffle=False, drop_last=False)
    mix = _mixer(cfg, len(splits.class_names))

    def log_record(record: dict) -> None:
        if dist.is_main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        if dist.is_main:
            save_train_checkpoint(out / "checkpoints" / "last.pt", model, optimizer, state, ema, cfg.to_dict())

    if dist.is_main:
        log.info(
            "%d train / %d val images, %d steps per epoch, %d steps",
            len(train_ds),
            len(eval_ds),
            steps_per_epoch,
            total_steps,
        )
    while state.epoch < cfg.schedule.epochs:
        epoch = state.epoch
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch, state.batch_in_epoch)
        bar = tqdm(
            total=steps_per_epoch,
            initial=state.batch_in_epoch // cfg.train.accum_steps,
            desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}",
            disable=not (progress and dist.is_main and _interactive()),
            unit="step",
        )

        rates: list[float] = []
        losses: list[float] = []  # this epoch's, for its line

        def on_step(metrics: dict, bar=bar, rates=rates, losses=losses, epoch=epoch) -> None:
            rates.append(metrics["img_per_s"])
            losses.append(metrics["loss"])
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.3f}",
                acc=f"{metrics['acc']:.3f}",
                lr=f"{metrics['lr']:.2e}",
                img_s=f"{metrics['img_per_s']:.0f}",
            )
            if state.step % cfg.run.log_every_steps == 0:
                log_record({"step": state.step, "epoch": epoch, **{f"train_{k}": v for k, v in metrics.items()}})
            if cfg.run.checkpoint_every_steps and state.step % cfg.run.checkpoint_every_steps == 0:
                checkpoint()

        train_one_epoch(
            train_model,
            _loader(train_ds, sampler, cfg.data.workers),
            optimizer,
            state,
            lr_fn=lr_fn,
            accum_steps=cfg.train.accum_steps,
            device=dist.device,
            precision=cfg.train.precision,
            clip_grad=cfg.optim.clip_grad,
            label_smoothing=cfg.augment.label_smoothing,
            mix=mix,
            ema=ema,
            ema_decay=cfg.train.ema_decay or 0.0,
            on_step=on_step,
            world=dist.world,
            distill=distiller,
        )
        bar.close()
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        if dist.is_main:
            scored = ema if ema is not None else model
            val = evaluate(
                scored,
                _loader(eval_ds, eval_batches, cfg.data.workers),
                len(splits.class_names),
                dist.device,
                cfg.train.precision,
            )
            record = {
                "step": state.step,
                "epoch": epoch + 1,
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "time_s": time.perf_counter() - t_start,
                "epoch_img_per_s": sorted(rates)[len(rates) // 2] if rates else None,
            }
            state.history.append(record)
            log_record(record)
            if progress:
                train_loss = f"train_loss {sum(losses) / len(losses):.4f} " if losses else ""
                tqdm.write(
                    f"epoch {epoch + 1}/{cfg.schedule.epochs}: {train_loss}val_acc {val['acc']:.4f} "
                    f"val_loss {val['loss']:.4f} ({record['epoch_img_per_s'] or 0:.0f} img/s)"
                )
            if val["acc"] > state.best_acc:
                state.best_acc = val["acc"]
                save(
                    scored,
                    out / "best.safetensors",
                    pre,
                    splits.class_names,
                    extra={"val_acc": val["acc"], "epoch": epoch + 1},
                )
            checkpoint()
            plot_curves(out / "metrics.jsonl", out / "curves.png")
        dist.barrier()

    result: dict[str, Any] = {"best_val_acc": state.best_acc, "steps": state.step}
    if dist.is_main:
        final = ema if ema is not None else model
        save(final, out / "last.safetensors", pre, splits.class_names)
        if splits.test is not None:
            best = load_checkpoint(out / "best.safetensors").model.to(dist.device)
            test_ds = TransformDataset(splits.test, eval_transform(pre), mode)
            test = evaluate(
                best,
                _loader(
                    test_ds,
                    EpochBatchSampler(len(test_ds), cfg.train.eval_batch_size, shuffle=False, drop_last=False),
                    cfg.data.workers,
                ),
                len(splits.class_names),
                dist.device,
                cfg.train.precision,
            )
            result.update(test_acc=test["acc"], test_per_class_acc=test["per_class_acc"])
        result["wall_s"] = time.perf_counter() - t_start
        _write_report(out, cfg, model, splits, state, result, init_report)
    dist.close()
    return result


def _trim_metrics(path: Path, step: int, dist: Dist) -> None:
    """On resume, drop records written after the checkpoint being resumed (they will be written again)."""
    if not dist.is_main or not path.exists():
        return
    write_metrics(path, [r for r in read_metrics(path) if r.get("step", 0) <= step])


def _write_report(
    out: Path, cfg: TrainConfig, model, splits, state: TrainState, result: dict, init_report: str | None
) -> None:
    from ..models.summary import count_params

    c = model.cfg
    records = read_metrics(out / "metrics.jsonl")
    rates = [r["epoch_img_per_s"] for r in records if r.get("epoch_img_per_s")]
    lines = [
        f"# Training report: {out.name}",
        "",
        f"- model: {cfg.model.name} ({c.describe()}, "  # any family: its config describes its sizes
        f"img={c.img_size[0]}x{c.img_size[1]}, {count_params(model):,} params)",
        f"- data: {cfg.data.path} ({len(splits.train)} train, {len(splits.val)} val"
        + (f", {len(splits.test)} test" if splits.test is not None else "")
        + f"; val {'held out of train' if splits.val_from_train else 'given'})",
        f"- schedule: {cfg.schedule.epochs} epochs, {state.step} steps, batch {cfg.train.batch_size}, "
        f"{cfg.optim.name} lr {cfg.optim.lr}, {cfg.train.precision}",
        f"- best validation accuracy: {state.best_acc:.4f}",
    ]
    d = cfg.train.distill
    if d.teacher:
        lines.append(f"- distilled from {d.teacher} ({d.kind}, alpha {d.alpha}, tau {d.tau})")
    if "test_acc" in result:
        lines.append(f"- **test accuracy (best checkpoint): {result['test_acc']:.4f}**")
    median = sorted(rates)[len(rates) // 2] if rates else 0
    lines.append(f"- wall time: {result['wall_s'] / 60:.1f} min; median training throughput {median:.0f} img/s")
    if init_report:
        lines += ["", "Initialised from:", "```", init_report, "```"]
    if "test_per_class_acc" in result:
        lines += ["", "| class | test accuracy |", "|---|---|"]
        lines += [f"| {n} | {a:.4f} |" for n, a in zip(splits.class_names, result["test_per_class_acc"], strict=True)]
    lines += ["", "![curves](curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
