"""Training: one shared loop (loop.py) over small parts, and the method recipes (recipes.py)."""

from .loop import train
from .record import TrainResult

__all__ = ["TrainResult", "train"]
