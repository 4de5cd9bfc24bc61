"""Hostile YAML through every entry point: one ConfigError naming the source, fast and small."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provenir.cli import app, main
from provenir.core import yaml_safe
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.core.yaml_safe import MAX_BYTES, Tagged, UnsafeYAMLError, compose_yaml, load_yaml

pytestmark = pytest.mark.timeout(120)

TIME_LIMIT_S = 1.0
MEMORY_LIMIT_MB = 100


def _laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" document: ``width ** levels`` strings from a few lines of aliases."""
    lines = ["name: bomb", "l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


#: name -> (document, a fragment the error must contain, the line it must name or None)
HOSTILE: dict[str, tuple[str, str, int | None]] = {
    "alias_bomb": (_laughs(), "aliases expand to more than", 7),
    "wide_alias_bomb": ("name: x\nbig: &big [" + ", ".join(["1"] * 5000) + "]\n"
                        "copies: [" + ", ".join(["*big"] * 50) + "]\n", "aliases expand to more than", 3),
    "many_aliases": ("name: x\na: &a 1\nb: [" + ", ".join(["*a"] * 5000) + "]\n", "more than 1000 aliases", 3),
    "recursive_alias": ("name: x\nloop: &loop [1, *loop]\n", "recursive document", 2),
    "deep_flow": ("name: " + "[" * 200_000 + "]" * 200_000 + "\n", "nested", 1),
    "deep_block": ("name: x\n" + "".join(" " * i + "k:\n" for i in range(200)) + "\n", "nested more than 64", 66),
    "deep_dashes": ("name: x\nv:\n  " + "- " * 100_000 + "x\n", "nested more than 64", 3),
    "deep_through_aliases": (
        "name: x\n" + "".join(f"a{i}: &a{i} [{'*a' + str(i - 1) if i else 0}]\n" for i in range(80)),
        "nested more than 64", 65),
    "python_object": ("name: !!python/object/apply:os.system ['true']\n", "!!python/object/apply:os.system", 1),
    "python_name": ("name: x\nf: !!python/name:os.system\n", "!!python/name:os.system is not allowed", 2),
    "python_module": ("name: x\nm: !!python/module:os\n", "is not allowed", 2),
    "local_tag": ("name: x\nf: !function utils.process\n", "!function is not allowed", 2),
    "huge_integer": ("name: x\nseed: " + "9" * 20_000 + "\n", "integer with more digits", None),
    "too_many_values": ("name: x\nv:\n" + "- 1\n" * 120_000, "more than 100000 values", None),
}
HUGE_SCALAR = "name: '" + "a" * (MAX_BYTES + 10) + "'\n"


def _timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.perf_counter()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the caller asserts on it
        return exc, time.perf_counter() - start
    return None, time.perf_counter() - start


def _assert_refused(exc: BaseException | None, elapsed: float, source: str, fragment: str,
                    line: int | None = None) -> str:
    assert isinstance(exc, ConfigError), repr(exc)
    message = str(exc)
    assert "\n" not in message, message
    assert message.startswith(f"{source}:" if line is None else f"{source}:{line}: "), message
    assert fragment in message, message
    assert elapsed < TIME_LIMIT_S, f"{elapsed:.2f}s: {message}"
    return message


# --- the loader ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_load_yaml_refuses_hostile_text(name):
    text, fragment, line = HOSTILE[name]
    exc, elapsed = _timed(lambda: load_yaml(text, source=f"{name}.yaml"))
    _assert_refused(exc, elapsed, f"{name}.yaml", fragment, line)


def test_limit_breaches_are_unsafe_yaml_errors_but_syntax_errors_are_not():
    for name, (text, _, _) in HOSTILE.items():
        with pytest.raises(UnsafeYAMLError):
            load_yaml(text, source=name)
    with pytest.raises(ConfigError) as info:
        load_yaml("a: [unclosed\n", source="s.yaml")
    assert not isinstance(info.value, UnsafeYAMLError)
    assert str(info.value).startswith("s.yaml:2: invalid YAML: ")


def test_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:  # 64 MiB: reading it whole would show in the time
        handle.write("name: '")
        for _ in range(64):
            handle.write("a" * (1 << 20))
        handle.write("'\n")
    exc, elapsed = _timed(lambda: load_yaml(path))
    _assert_refused(exc, elapsed, str(path), f"larger than {MAX_BYTES} bytes")
    exc, elapsed = _timed(lambda: load_yaml(HUGE_SCALAR, source="text"))
    _assert_refused(exc, elapsed, "text", "larger than")


def test_limits_are_keywords():
    assert load_yaml("a: [[1]]\n", source="s") == {"a": [[1]]}
    with pytest.raises(UnsafeYAMLError, match="nested more than 1 levels"):
        load_yaml("a: [[1]]\n", source="s", max_depth=1)
    with pytest.raises(UnsafeYAMLError, match="more than 2 aliases"):
        load_yaml("a: &a 1\nb: [*a, *a, *a]\n", source="s", max_aliases=2)
    with pytest.raises(UnsafeYAMLError, match="more than 3 values"):
        load_yaml("a: [1, 2, 3]\n", source="s", max_nodes=3)
    with pytest.raises(UnsafeYAMLError, match="larger than 4 bytes"):
        load_yaml("a: 12\n", source="s", max_bytes=4)


def test_plain_yaml_still_loads():
    text = textwrap.dedent("""\
        base: &base {rank: 8, alpha: 16.0}
        peft:
          <<: *base
          rank: 4
        modules: [q_proj, v_proj]
        flags: {on: true, off: null}
        date: 2026-01-02
        explicit: !!str 12
        blob: !!binary aGVsbG8=
        """)
    data = load_yaml(text, source="ok.yaml")
    assert data["peft"] == {"rank": 4, "alpha": 16.0}
    assert data["modules"] == ["q_proj", "v_proj"] and data["explicit"] == "12"
    assert data["blob"] == b"hello" and str(data["date"]) == "2026-01-02"
    assert load_yaml("", source="empty") is None
    # an alias bomb of modest size is a normal document: 9**4 values is under the limit
    assert len(load_yaml(_laughs(levels=4), source="small")["l3"]) == 9


def test_keep_tags_loads_named_local_tags_only():
    data = load_yaml("f: !function utils.process\n", source="t", keep_tags=("!function",))
    assert data == {"f": Tagged("!function", "utils.process")}
    with pytest.raises(UnsafeYAMLError, match="!!python/name:os.system is not allowed"):
        load_yaml("f: !!python/name:os.system\n", source="t", keep_tags=("!function",))


def test_other_bad_input_names_the_source():
    for text, fragment in [
        ("a: \ud800\n", "not valid Unicode"),
        ("a: &x 1\nb: &x 2\n", "an anchor is defined twice"),
        ("a: *nowhere\n", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("? [1, 2]\n: x\n", "invalid YAML"),
    ]:
        exc, elapsed = _timed(lambda text=text: load_yaml(text, source="bad.yaml"))
        _assert_refused(exc, elapsed, "bad.yaml", fragment)
    with pytest.raises(TypeError, match="source="):
        load_yaml("a: 1\n")


def test_compose_yaml_applies_the_same_limits():
    assert compose_yaml("a: 1\n", source="s").value[0][0].start_mark.line == 0
    exc, elapsed = _timed(lambda: compose_yaml(_laughs(), source="c.yaml"))
    _assert_refused(exc, elapsed, "c.yaml", "aliases expand to more than", 7)


@pytest.mark.parametrize("name", ["alias_bomb", "recursive_alias", "deep_flow", "python_object",
                                  "too_many_values"])
def test_pure_python_parser_has_the_same_limits(monkeypatch, name):
    """Without libyaml the loader falls back to PyYAML's own parser, with the same limits."""
    monkeypatch.setattr(yaml_safe, "_LOADER", yaml_safe._PureLoader)
    text, fragment, line = HOSTILE[name]
    exc, elapsed = _timed(lambda: load_yaml(text, source="p.yaml"))
    assert isinstance(exc, UnsafeYAMLError) and fragment.split()[0] in str(exc), exc
    assert elapsed < 10 * TIME_LIMIT_S  # pure Python parses ~10x slower; still bounded
    assert load_yaml("a: &a [1]\nb: *a\n", source="p.yaml") == {"a": [1], "b": [1]}


# --- memory: each entry point in a fresh interpreter, peak RSS over its baseline ----------------

_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.eval._config import load_eval_config
from provenir._cli._common import parse_overrides
from provenir.adapters._card import render_model_card
cases, flags = json.loads(Path(sys.argv[1]).read_text())
folder = Path(sys.argv[2])
entries = {
    "RunConfig.from_yaml": lambda path, text: RunConfig.from_yaml(path),
    "load_eval_config": lambda path, text: load_eval_config(path),
    "--set": lambda path, text: parse_overrides(["name=" + flags[path.stem]]),
    "model card": lambda path, text: render_model_card("a/b", folder, {}, {}, "---\\n" + text + "---\\nbody\\n"),
}
def peak_kb():  # this process's own peak (ru_maxrss would start from the parent's across fork and exec)
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))
before = peak_kb()
refused = 0
for name, text in cases.items():
    path = folder / (name + ".yaml")
    path.write_text(text)
    for entry, call in entries.items():
        try:
            call(path, text)
        except ConfigError:
            refused += 1
after = peak_kb()
print(json.dumps({"grown_mb": (after - before) / 1024, "refused": refused}))
"""


def test_memory_stays_bounded_through_every_entry_point(tmp_path):
    cases = {name: text for name, (text, _, _) in HOSTILE.items()}
    cases["huge_scalar"] = HUGE_SCALAR
    one_line = {"alias_bomb": _one_line_laughs(), "deep_flow": "[" * 200_000,
                "recursive_alias": "&a [1, *a]", "python_object": "!!python/name:os.system",
                "huge_scalar": "x" * (MAX_BYTES + 1), "huge_integer": "9" * 20_000,
                "too_many_values": "[" + ", ".join(["1"] * 120_000) + "]"}
    flags = {name: one_line.get(name, "{" + ", ".join(text.splitlines()) + "}") for name, text in cases.items()}
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps([cases, flags]))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(cases_file), str(work)],
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["grown_mb"] < MEMORY_LIMIT_MB, report
    assert report["refused"] == 4 * len(cases), report


# --- entry points -------------------------------------------------------------------------------


@pytest.fixture(params=sorted(HOSTILE))
def hostile_file(request, tmp_path) -> tuple[Path, str, int | None]:
    text, fragment, line = HOSTILE[request.param]
    path = tmp_path / f"{request.param}.yaml"
    path.write_text(text)
    return path, fragment, line


def test_run_config_from_yaml(hostile_file):
    path, fragment, line = hostile_file
    exc, elapsed = _timed(lambda: RunConfig.from_yaml(path))
    _assert_refused(exc, elapsed, str(path), fragment, line)


def test_run_config_huge_file(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE_SCALAR)
    exc, elapsed = _timed(lambda: RunConfig.from_yaml(path))
    _assert_refused(exc, elapsed, str(path), "larger than")


def test_config_validate_cli(hostile_file, capsys):
    path, fragment, line = hostile_file
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError), result.output
    exc, elapsed = _timed(lambda: main(["config", "validate", str(path)]))
    assert isinstance(exc, SystemExit) and exc.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(path) in err and fragment.split()[0] in err, err
    assert "Traceback" not in err and elapsed < TIME_LIMIT_S


def _one_line_laughs() -> str:
    return "{" + ", ".join(_laughs().splitlines()) + "}"


@pytest.mark.parametrize("value", [
    _one_line_laughs(),
    "[" * 100_000,
    "&a [1, *a]",
    "!!python/object/apply:os.system ['true']",
    "x" * (MAX_BYTES + 1),
])
def test_set_flag(tmp_path, capsys, value):
    config = tmp_path / "ok.yaml"
    config.write_text("name: ok\nbackend: stub\n")
    exc, elapsed = _timed(lambda: main(["config", "validate", str(config), "--set", f"peft.rank={value}"]))
    err = capsys.readouterr().err
    assert isinstance(exc, SystemExit) and exc.code == 2, err
    assert err.count("error:") == 1 and "--set peft.rank: " in err and "Traceback" not in err, err
    assert elapsed < TIME_LIMIT_S


def test_eval_config(hostile_file):
    from provenir.eval._config import load_eval_config

    path, fragment, line = hostile_file
    exc, elapsed = _timed(lambda: load_eval_config(path))
    _assert_refused(exc, elapsed, str(path), fragment, line)
    result = CliRunner().invoke(app, ["eval", str(path)])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith(str(path))


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"local_tag"}))  # !function is lm-eval's tag
def test_lm_eval_task_file(name, tmp_path, capsys):
    pytest.importorskip("lm_eval.tasks")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    task = tasks / f"{name}.yaml"
    task.write_text(HOSTILE[name][0])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    exc, elapsed = _timed(lambda: main(["bench", str(model), "--task", "x", "--task-dir", str(tasks)]))
    err = capsys.readouterr().err
    assert isinstance(exc, SystemExit) and exc.code == 2, err
    assert err.count("error:") == 1 and f"{task}:" in err and "Traceback" not in err, err
    assert elapsed < 5 * TIME_LIMIT_S  # includes building lm-eval's task index once


def test_lm_eval_task_files_keep_their_function_tags(tmp_path):
    from provenir.eval.benchmarks import _absolutise_tasks

    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    text = "task: t\nprocess_docs: !function utils.process\n"
    (source / "t.yaml").write_text(text)
    (source / "broken.yaml").write_text("task: [unclosed\n")
    _absolutise_tasks(source, target)
    assert (target / "t.yaml").read_text() == text
    assert (target / "broken.yaml").read_text() == "task: [unclosed\n"  # lm-eval reports it


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_model_card_front_matter(name, tmp_path):
    from provenir.adapters._card import render_model_card

    text, fragment, _ = HOSTILE[name]
    readme = tmp_path / "README.md"
    existing = "---\n" + text + "---\n\n# card\n"
    exc, elapsed = _timed(lambda: render_model_card("alice/x", tmp_path, {}, {}, existing,
                                                   existing_source=str(readme)))
    _assert_refused(exc, elapsed, f"{readme}: front matter", fragment)


def test_model_card_with_malformed_front_matter_is_kept_as_text(tmp_path):
    from provenir.adapters._card import render_model_card

    card = render_model_card("alice/x", tmp_path, {}, {}, "---\nlicense: [unclosed\n---\n\n# card\n")
    assert "## Provenance" in card and "provenir" in card


def test_verify_run_with_a_hostile_stored_config(tmp_path):
    from provenir.core.run import verify_run
    from provenir.core.store import ArtifactStore
    from provenir.pipeline import run_job

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}?", "output": str(i)}) + "\n" for i in range(4)))
    config = RunConfig.model_validate({"name": "v", "backend": "stub", "max_steps": 1,
                                       "data": {"train_path": str(data), "template": "chatml"}})
    store = ArtifactStore(str(tmp_path / "store"))
    run_id = run_job(config, store=store).run_id
    (Path(store.path(run_id, "config.yaml"))).write_text(_laughs())
    exc, elapsed = _timed(lambda: verify_run(store, run_id))
    assert exc is None and elapsed < TIME_LIMIT_S
    report = verify_run(store, run_id)
    check = next(c for c in report.checks if c.name == "config.yaml")
    assert not check.ok and "aliases expand to more than" in check.detail and run_id in check.detail
