"""The optional NER engine for PERSON and LOCATION: presidio-analyzer over a spaCy pipeline.

Names and places cannot be found with patterns. When presidio-analyzer and a spaCy model are
installed the scanners use them; otherwise scans say plainly that no NER engine was active (the
result's ``ner_engine`` is ``None`` and ``ner_note`` explains). A model is never downloaded: only an
installed spaCy package or a local pipeline folder is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provenir.core.errors import DependencyError

DEFAULT_MODELS = ("en_core_web_lg", "en_core_web_trf", "en_core_web_md", "en_core_web_sm")
NER_ENTITIES = ("PERSON", "LOCATION")
MEMO_MAX_CHARS = 64  # texts up to this long have their NER spans memoised (keys, roles, labels)
MEMO_SIZE = 16384
NO_ENGINE_NOTE = (
    "PERSON and LOCATION were not scanned: no NER engine is active (install presidio-analyzer and "
    "a spaCy model, e.g. `pip install 'provenir[governance-ner]' && python -m spacy download "
    "en_core_web_lg`, then pass ner='presidio' or leave ner='auto')"
)


def _installed_model(candidates: tuple[str, ...]) -> str | None:
    # find_spec, not an import: importing spaCy/presidio costs seconds, and "auto" must stay cheap
    # on the (common) machine without a model.
    import importlib.util

    if importlib.util.find_spec("spacy") is None:
        return None
    for name in candidates:
        if Path(name).is_dir():
            return name
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


class PresidioNER:
    """PERSON/LOCATION spans from presidio-analyzer's spaCy recognizer.

    Args:
        model: an installed spaCy package name or a local spaCy pipeline folder.
        score_threshold: presidio's minimum confidence.
    """

    def __init__(self, model: str, *, score_threshold: float = 0.5, entities: tuple[str, ...] = NER_ENTITIES):
        try:
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import NlpEngineProvider
        except ImportError as exc:
            raise DependencyError(
                "NER (PERSON, LOCATION) needs presidio-analyzer: pip install 'provenir[governance-ner]'"
            ) from exc
        if _installed_model((model,)) is None:
            raise DependencyError(
                f"spaCy model {model!r} is not installed; install it (python -m spacy download {model}) "
                "or pass the folder of a saved spaCy pipeline"
            )
        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}],
        })
        self._analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
        self.model = model
        self.entities = list(entities)
        self.score_threshold = score_threshold
        self.name = f"presidio-analyzer+spacy:{Path(model).name}"
        self._memo: dict[str, tuple[tuple[str, int, int], ...]] = {}

    def analyze(self, text: str) -> list[tuple[str, int, int]]:
        """``(entity type, start, end)`` of each PERSON/LOCATION in ``text``.

        Short texts (dict keys, which repeat in every record of a schema, roles, labels) are memoised
        per process, bounded: the pipeline's answer depends on the text alone, so each distinct key
        costs one model call, not one per record.
        """
        short = len(text) <= MEMO_MAX_CHARS
        if short:
            known = self._memo.get(text)
            if known is not None:
                return list(known)
        results = self._analyzer.analyze(text=text, language="en", entities=self.entities,
                                         score_threshold=self.score_threshold)
        out = sorted((r.entity_type, r.start, r.end) for r in results)
        if short:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[text] = tuple(out)
        return out

    def __reduce__(self) -> tuple[Any, ...]:  # re-created (not pickled) on Ray workers
        return (_make_ner, (self.model, self.score_threshold, tuple(self.entities)))


def _make_ner(model: str, score_threshold: float, entities: tuple[str, ...]) -> PresidioNER:
    return PresidioNER(model, score_threshold=score_threshold, entities=entities)


def load_ner(ner: str | None, model: str | None = None) -> tuple[PresidioNER | None, str | None]:
    """Resolve the ``ner`` option: ``"auto"`` (use presidio+spaCy when installed), ``"presidio"``
    (required: a clear error when missing), ``None``/``"none"`` (off).

    Returns ``(engine or None, note)``; the note says why no engine is active.
    """
    if ner in (None, "none", False):
        return None, "PERSON and LOCATION were not scanned: NER is turned off (ner=None)"
    if ner not in ("auto", "presidio"):
        raise DependencyError(f"ner={ner!r}: expected 'auto', 'presidio' or None")
    candidates = (model,) if model else DEFAULT_MODELS
    if ner == "auto":
        import importlib.util

        if importlib.util.find_spec("presidio_analyzer") is None:
            return None, NO_ENGINE_NOTE
        found = _installed_model(candidates)
        if found is None:
            return None, NO_ENGINE_NOTE
        return PresidioNER(found), None
    found = _installed_model(candidates)
    if found is None:
        raise DependencyError(
            f"ner='presidio' needs a spaCy model ({', '.join(candidates)}); none is installed. "
            + NO_ENGINE_NOTE.split("(", 1)[1].rstrip(")")
        )
    return PresidioNER(found), None
