"""The training tasks of ``fastconv train``, by model name (see :class:`~fastconv.train.base.Task`)."""
from __future__ import annotations

from typing import Any, Dict, Type

from .base import Task, flip_rot
from .classification import CifarNetTask, ClassifierTask
from .denoising import DenoisingTask
from .generative import CVAETask, VAETask
from .options import MODELS
from .segmentation import SegViTTask, UNetTask, dice_loss

TASKS: Dict[str, Type[Task]] = {
    "classifier": ClassifierTask, "cifarnet": CifarNetTask, "unet": UNetTask, "segvit": SegViTTask,
    "denoiser": DenoisingTask, "vae": VAETask, "cvae": CVAETask,
}
assert tuple(TASKS) == MODELS


def make_task(name: str, args: Dict[str, Any]) -> Task:
    """The :class:`Task` for model ``name`` configured by the resolved CLI ``args``."""
    return TASKS[name](args)


__all__ = ["TASKS", "MODELS", "Task", "make_task", "dice_loss", "flip_rot"]
