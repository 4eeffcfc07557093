"""Training: TrainConfig (YAML recipes), the epoch loop, the LR schedule, checkpoints, DDP."""

from .config import ConfigError, TrainConfig, load_config
from .engine import TrainState, evaluate, train_one_epoch
from .loop import fit
from .schedule import lr_at

__all__ = ["ConfigError", "TrainConfig", "TrainState", "evaluate", "fit", "load_config", "lr_at", "train_one_epoch"]
