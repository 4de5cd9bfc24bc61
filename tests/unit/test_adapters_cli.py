"""`provenir merge`, `provenir verify-merge` and `provenir hub push|pull|info|verify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters_support.fake_hub import FakeHub  # noqa: E402
from adapters_support.lora import make_adapter  # noqa: E402

from provenir.cli import main  # noqa: E402
from provenir.core.hashing import sha256_file  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TOKEN = "hf_cliTestToken42"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("cli-adapters")
    return [make_adapter(tiny_model_dir, root / name, seed=seed) for name, seed in (("a", 31), ("b", 32), ("c", 33))]


def test_merge_ties_writes_an_adapter_and_prints_json(capsys, adapters, tmp_path):
    out = tmp_path / "merged"
    code, stdout, _ = cli(
        capsys, "merge", *map(str, adapters), "--strategy", "ties", "--density", "0.4",
        "-w", "1", "-w", "0.5", "-w", "2", "--out", str(out), "--json",
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["strategy"] == "ties" and summary["rank"] == 12
    assert summary["files_sha256"]["adapter_model.safetensors"] == sha256_file(out / "adapter_model.safetensors")
    manifest = json.loads((out / "merge_manifest.json").read_text())
    assert manifest["parameters"]["weights"] == [1.0, 0.5, 2.0] and manifest["parameters"]["density"] == 0.4

    code, stdout, _ = cli(capsys, "verify-merge", str(out))
    assert code == 0 and "verified" in stdout
    (out / "adapter_config.json").write_text("{}")
    code, stdout, _ = cli(capsys, "verify-merge", str(out))
    assert code == 1 and "adapter_config.json: sha256 differs" in stdout


def test_merge_errors_are_one_red_line_and_exit_2(capsys, adapters, tmp_path):
    code, _, err = cli(capsys, "merge", *map(str, adapters), "--out", str(tmp_path / "m"))
    assert code == 2 and "slerp merges exactly two adapters, got 3" in err
    assert "Traceback" not in err
    code, _, err = cli(capsys, "merge", *map(str, adapters[:2]), "--strategy", "dare", "--density", "0", "--out", str(tmp_path / "m"))
    assert code == 2 and "density must be in (0, 1]" in err
    assert not (tmp_path / "m").exists()


def test_hub_push_info_pull_verify(capsys, adapters, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(tokens={TOKEN}) as hub:
        code, stdout, err = cli(
            capsys, "hub", "push", str(adapters[0]), "--repo-id", "bob/cli-lora", "--private",
            "--endpoint", hub.endpoint, "--json",
        )
        assert code == 0, err
        pushed = json.loads(stdout)
        assert pushed["commit_sha"] == hub.head("bob/cli-lora")
        assert "adapter_model.safetensors" in pushed["pushed_files"]
        assert hub.repos["bob/cli-lora"].private

        code, stdout, _ = cli(capsys, "hub", "info", "bob/cli-lora", "--endpoint", hub.endpoint, "--json")
        info = json.loads(stdout)
        weights = next(f for f in info["files"] if f["path"] == "adapter_model.safetensors")
        assert code == 0 and weights["sha256"] == sha256_file(adapters[0] / "adapter_model.safetensors")

        code, stdout, _ = cli(capsys, "hub", "pull", "bob/cli-lora", "--out", str(tmp_path / "pulled"), "--endpoint", hub.endpoint)
        assert code == 0 and stdout.strip().endswith(str(tmp_path / "pulled"))
        pulled = tmp_path / "pulled" / "adapter_model.safetensors"
        code, stdout, _ = cli(capsys, "hub", "verify", str(pulled), weights["sha256"])
        assert code == 0 and "sha256 matches" in stdout
        code, stdout, _ = cli(capsys, "hub", "verify", str(pulled), "0" * 64)
        assert code == 1 and "sha256 differs" in stdout

        code, _, err = cli(capsys, "hub", "info", "bob/missing", "--endpoint", hub.endpoint)
        assert code == 2 and "repository bob/missing not found" in err
        monkeypatch.setenv("HF_TOKEN", "hf_notValid")
        code, _, err = cli(capsys, "hub", "push", str(adapters[0]), "--repo-id", "bob/other", "--endpoint", hub.endpoint)
        assert code == 2 and "refused the credentials" in err and "hf_notValid" not in err
        code, _, err = cli(capsys, "hub", "push", str(adapters[0]), "--repo-id", "bad id", "--endpoint", hub.endpoint)
        assert code == 2 and "repo_id" in err
