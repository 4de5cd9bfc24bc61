"""RunConfig.from_yaml: where each value came from (file line or override) and what that implies —
error locations, path resolution, YAML 1.1 booleans, template names and input files."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError


def write(folder: Path, text: str, name: str = "cfg.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path, **kwargs)
    return str(info.value)


# --- errors caused by an override name the override, not a line of the file -----------------------

QUICK = "name: q\nmax_steps: 20\npeft:\n  rank: 8\n"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"peft.rnk": 3}, "--set peft.rnk=3: peft.rnk: unknown key; allowed keys here: alpha, dropout"),
        ({"max_steps": "abc"}, "--set max_steps=abc: max_steps: Input should be a valid integer"),
        ({"peft.rank": 0}, "--set peft.rank=0: peft.rank: must be >= 1 (got 0)"),
        ({"distributed.num_gpus": 0}, "--set distributed.num_gpus=0: distributed.num_gpus: must be >= 1"),
        ({"peft": {"rank": 0}}, "--set peft={rank: 0}: peft.rank: must be >= 1 (got 0)"),
        ({"backend": None}, "--set backend=null: backend: Input should be a valid string"),
    ],
)
def test_override_errors_name_the_override(tmp_path, overrides, expected):
    message = error_of(write(tmp_path, QUICK), overrides=overrides)
    assert message.startswith(expected), message


def test_file_errors_still_name_the_line_when_overrides_are_given(tmp_path):
    path = write(tmp_path, "name: q\nmax_steps: 0\npeft:\n  rank: 8\n")
    message = error_of(path, overrides={"peft.rank": 4})
    assert message == f"{path}:2: max_steps: must be >= 1 (got 0)"


def test_override_into_a_scalar_names_the_override_and_the_line(tmp_path):
    path = write(tmp_path, QUICK)
    message = error_of(path, overrides={"max_steps.x": 1})
    assert message == f"--set max_steps.x=1: max_steps is not a section (set to 20 on {path}:2)"


# --- paths: file-relative in the file, CWD-relative from overrides --------------------------------


def test_paths_in_the_file_resolve_against_its_folder_and_overrides_against_the_cwd(
    tmp_path, monkeypatch
):
    config_dir, cwd = tmp_path / "examples", tmp_path / "work"
    (config_dir / "data").mkdir(parents=True)
    (cwd / "examples" / "data").mkdir(parents=True)
    path = write(config_dir, "name: p\ndata:\n  train_path: data/a.jsonl\n  eval_path: data/b.jsonl\n")
    monkeypatch.chdir(cwd)

    cfg = RunConfig.from_yaml(path, overrides={"data.train_path": "examples/data/c.jsonl"})
    assert cfg.data.train_path == str((cwd / "examples" / "data" / "c.jsonl").resolve())
    assert cfg.data.eval_path == str((config_dir / "data" / "b.jsonl").resolve())

    whole = RunConfig.from_yaml(path, overrides={"data": {"train_path": "d.jsonl"}})
    assert whole.data.train_path == str((cwd / "d.jsonl").resolve())


def test_model_path_beside_the_file_resolves_but_an_override_is_taken_as_given(tmp_path, monkeypatch):
    config_dir, cwd = tmp_path / "cfg", tmp_path / "work"
    (config_dir / "models" / "tiny").mkdir(parents=True)
    (cwd / "models" / "tiny").mkdir(parents=True)
    path = write(config_dir, "name: m\nmodel_name_or_path: models/tiny\n")
    monkeypatch.chdir(cwd)

    assert RunConfig.from_yaml(path).model_name_or_path == str((config_dir / "models" / "tiny").resolve())
    overridden = RunConfig.from_yaml(path, overrides={"model_name_or_path": "models/tiny"})
    assert overridden.model_name_or_path == "models/tiny"  # relative to the working directory
    hub = RunConfig.from_yaml(write(config_dir, "name: m\nmodel_name_or_path: org/model\n", "hub.yaml"))
    assert hub.model_name_or_path == "org/model"


def test_output_locations_are_not_rewritten(tmp_path):
    path = write(
        tmp_path / "cfg",
        "name: o\noutput_dir: out\nstorage_root: store\ngovernance:\n  audit_dir: audit\n",
    )
    cfg = RunConfig.from_yaml(path)
    assert (cfg.output_dir, cfg.storage_root, cfg.governance.audit_dir) == ("out", "store", "audit")


# --- YAML 1.1 booleans ------------------------------------------------------------------------------


def test_unquoted_off_means_off(tmp_path):
    path = write(
        tmp_path,
        "name: g\ngovernance:\n  pii: off\n  secrets: off\ncuration:\n  decontamination: off\n",
    )
    cfg = RunConfig.from_yaml(path)
    assert (cfg.governance.pii, cfg.governance.secrets, cfg.curation.decontamination) == ("off", "off", "off")
    assert RunConfig.from_yaml(path, overrides={"governance.pii": False}).governance.pii == "off"
    again = RunConfig(name="g")
    again.governance.pii = False  # validate_assignment runs the same validator
    assert again.governance.pii == "off"


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("name: b\nbackend: on\n", 2,
         "backend: YAML reads the unquoted on as the boolean true; quote it: 'on' (allowed: stub, trl)"),
        ("name: b\ngovernance:\n  pii: yes\n", 3,
         "governance.pii: YAML reads the unquoted yes as the boolean true; quote it: 'yes' "
         "(allowed: off, scan, mask)"),
        ("name: b\ngovernance:\n  pii_replacement: no\n", 3,
         "governance.pii_replacement: YAML reads the unquoted no as the boolean false; quote it: 'no'"),
        ("name: b\ntraining:\n  lr_scheduler: off\n", 3,
         "training.lr_scheduler: YAML reads the unquoted off as the boolean false; quote it: 'off'"),
        ("name: no\n", 1, "name: YAML reads the unquoted no as the boolean false; quote it: 'no'"),
        ("name: b\ndata:\n  template: On\n", 3,
         "data.template: YAML reads the unquoted On as the boolean true; quote it: 'On'"),
    ],
)
def test_yaml_booleans_in_string_fields_say_to_quote(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}:{line}: {expected}")


def test_boolean_from_an_override_says_how_to_quote_it(tmp_path):
    message = error_of(write(tmp_path, QUICK + "backend: yes\n"), overrides={"backend": True})
    assert message == (
        "--set backend=true: backend: got the boolean true: YAML reads unquoted on/off/yes/no as "
        "booleans; quote it: --set \"backend='on'\" (allowed: stub, trl)"
    )


# --- template names and input files ----------------------------------------------------------------


def test_unknown_template_names_line_field_and_the_available_names(tmp_path):
    path = write(tmp_path, "name: t\ndata:\n  template: chatmll\n")
    assert error_of(path) == (
        f"{path}:3: data.template: unknown template 'chatmll'; did you mean 'chatml'? "
        "(available: alpaca, chatml, llama3, mistral, phi3, raw_completion)"
    )
    assert error_of(path, overrides={"data.template": "zzz"}) == (
        "--set data.template=zzz: data.template: unknown template 'zzz' "
        "(available: alpaca, chatml, llama3, mistral, phi3, raw_completion)"
    )


def test_check_inputs_names_each_missing_file(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    path = write(tmp_path, "name: f\ndata:\n  train_path: data/missing.jsonl\n  eval_path: data\n")
    RunConfig.from_yaml(path)  # paths are only checked on request
    assert error_of(path, check_inputs=True).splitlines() == [
        f"{path}:3: data.train_path: file not found: {(tmp_path / 'data' / 'missing.jsonl').resolve()}",
        f"{path}:4: data.eval_path: is a folder, expected a JSONL file: {(tmp_path / 'data').resolve()}",
    ]
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    message = error_of(path, overrides={"data.eval_path": None, "data.train_path": "t.jsonl"}, check_inputs=True)
    assert message == f"--set data.train_path=t.jsonl: data.train_path: file not found: {cwd.resolve() / 't.jsonl'}"
    (cwd / "t.jsonl").write_text('{"text": "x"}\n')
    cfg = RunConfig.from_yaml(
        path, overrides={"data.eval_path": None, "data.train_path": "t.jsonl"}, check_inputs=True
    )
    assert cfg.data.train_path == str(cwd.resolve() / "t.jsonl")


def test_check_inputs_leaves_remote_uris_to_the_reader(tmp_path):
    path = write(tmp_path, "name: r\ndata:\n  train_path: s3://bucket/train.jsonl\n")
    assert RunConfig.from_yaml(path, check_inputs=True).data.train_path == "s3://bucket/train.jsonl"
