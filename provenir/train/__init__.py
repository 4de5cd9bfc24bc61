"""Training: backends chosen by name (``stub``, ``trl``), the tiny-model factory, RLAIF, callbacks.

Example:
    >>> from provenir.train import get_backend
    >>> get_backend("stub").name
    'stub'
"""

from provenir.train._stop import TrainingStopped
from provenir.train.backends import BACKEND_REGISTRY, get_backend
from provenir.train.tiny import build_tiny_model

__all__ = ["BACKEND_REGISTRY", "TrainingStopped", "build_tiny_model", "get_backend"]
