"""The model card (README.md) Provenir writes when it pushes an adapter: what it is and where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from provenir.core.errors import ConfigError
from provenir.core.yaml_safe import UnsafeYAMLError, load_yaml


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _split_front_matter(text: str, source: str = "README.md") -> tuple[dict[str, Any], str]:
    """A card's YAML metadata and body. Malformed metadata is kept as text (no metadata); hostile
    metadata (an alias bomb, a ``!!python`` tag, …) is a :class:`ConfigError` naming ``source``."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            try:
                data = load_yaml(text[3:end], source=f"{source}: front matter")
            except UnsafeYAMLError:
                raise
            except ConfigError:
                data = None
            if isinstance(data, dict):
                return data, text[end + 4 :].lstrip("\n")
    return {}, text


def _is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and value.count("/") == 1 and not value.startswith((".", "/")) and not Path(value).exists()


def _local_base_model_tag(tag: Any) -> bool:
    """PEFT tags cards ``base_model:adapter:<base>``; with a local base path that tag is meaningless."""
    if not isinstance(tag, str) or not tag.startswith("base_model:"):
        return False
    return not _is_hub_id(tag.split(":")[-1])


def render_model_card(
    repo_id: str,
    folder: Path,
    files_sha256: dict[str, str],
    run: dict[str, Any],
    existing: str | None = None,
    existing_source: str = "README.md",
) -> str:
    """A model card with YAML metadata (base model, library, tags) and a provenance section.

    ``run`` is the summary of a Provenir run manifest beside the adapter (may be empty); a
    ``merge_manifest.json`` inside the folder adds the merge's strategy and parents. With
    ``existing`` (the folder's own README.md, e.g. the one PEFT's ``save_pretrained`` writes), its
    text and metadata are kept, the ``provenir`` tags are added, a ``base_model`` that is a local
    path (which the hub cannot link) is dropped from the metadata, and the provenance section is
    appended. ``existing_source`` names that README in errors.

    Raises:
        ConfigError: the existing README's front matter is hostile YAML (see
            :mod:`provenir.core.yaml_safe`).
    """
    if existing is not None:
        metadata, body = _split_front_matter(existing, existing_source)
        generated = render_model_card(repo_id, folder, files_sha256, run)
        new_metadata, new_body = _split_front_matter(generated)
        tags = [t for t in metadata.get("tags") or [] if not _local_base_model_tag(t)]
        tags += [t for t in new_metadata.get("tags", []) if t not in tags]
        metadata["tags"] = tags
        if "base_model" in metadata and not _is_hub_id(metadata["base_model"]):
            del metadata["base_model"]
        provenance = new_body[new_body.index("## Provenance") :]
        front = "---\n" + yaml.safe_dump(metadata, sort_keys=True).rstrip() + "\n---\n\n"
        return front + body.rstrip() + "\n\n" + provenance
    adapter_config = _read_json(folder / "adapter_config.json") or {}
    merge = _read_json(folder / "merge_manifest.json")
    base_model = adapter_config.get("base_model_name_or_path") or run.get("base_model")
    tags = ["provenir"]
    if adapter_config:
        tags += ["peft", str(adapter_config.get("peft_type", "lora")).lower()]
    if merge:
        tags += ["merge", f"merge-{merge.get('strategy')}"]
    metadata: dict[str, Any] = {"tags": tags}
    if adapter_config:
        metadata["library_name"] = "peft"
    # the hub links base_model only for hub ids; a local path would be rejected as metadata
    if _is_hub_id(base_model):
        metadata["base_model"] = base_model

    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=True).rstrip(),
        "---",
        "",
        f"# {repo_id}",
        "",
    ]
    if adapter_config:
        lines += [
            f"A {adapter_config.get('peft_type', 'PEFT')} adapter (rank {adapter_config.get('r')}, "
            f"alpha {adapter_config.get('lora_alpha')}) for `{base_model}`, pushed by Provenir.",
            "",
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
            "```",
            "",
        ]
    lines += ["## Provenance", "", "| field | value |", "|---|---|"]
    for key in ("run_id", "base_model", "dataset_hash", "config_hash", "git_sha", "seed"):
        if run.get(key) not in (None, ""):
            lines.append(f"| {key} | `{run[key]}` |")
    if not run.get("base_model") and base_model:
        lines.append(f"| base_model | `{base_model}` |")
    if run.get("parents"):
        lines.append(f"| parent runs | {', '.join(f'`{p}`' for p in run['parents'])} |")
    if not run:
        lines.append("| run_id | (no Provenir run manifest beside the adapter) |")
    if merge:
        lines += [
            "",
            f"### Merge ({merge.get('strategy')})",
            "",
            f"Parameters: `{json.dumps(merge.get('parameters', {}), sort_keys=True)}`",
            "",
            "| parent adapter | adapter_model.safetensors sha256 | run |",
            "|---|---|---|",
        ]
        for record in merge.get("inputs", []):
            digest = record.get("files", {}).get("adapter_model.safetensors", "")
            lines.append(
                f"| `{Path(str(record.get('path', ''))).name}` | `{digest}` | "
                f"{record.get('provenance', {}).get('run_id', '-')} |"
            )
    lines += ["", "## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{name}` | `{digest}` |" for name, digest in sorted(files_sha256.items())]
    return "\n".join(lines) + "\n"
