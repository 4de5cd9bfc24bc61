"""HubClient through the real ``huggingface_hub`` client against a loopback hub server.

The server (tests/adapters_support/fake_hub.py) speaks the hub's HTTP API on 127.0.0.1 and is
stopped by the fixture that started it. Xet uploads are switched off for these tests (the fake
server speaks the LFS ``basic`` transfer), and offline mode is lifted for the client only.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters_support.fake_hub import FakeHub  # noqa: E402
from adapters_support.lora import make_adapter  # noqa: E402

from provenir.adapters.hub import HubClient, HubConfig, HubError, HubPushResult  # noqa: E402
from provenir.core.errors import ConfigError, ProvenirError  # noqa: E402
from provenir.core.hashing import sha256_file  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TOKEN = "hf_provenirTestToken0123456789"


@pytest.fixture()
def online(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture()
def hub(online):
    with FakeHub(tokens={TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """A run folder as Provenir lays it out: manifest.json beside the adapter folder."""
    run = tmp_path_factory.mktemp("runs") / "run-20260101-abc"
    make_adapter(tiny_model_dir, run / "adapter", seed=1)
    manifest = {
        "run_id": "run-20260101-abc",
        "dataset_hash": "d" * 64,
        "config_hash": "c" * 64,
        "git_sha": "0123abc",
        "seed": 7,
        "provenance": ["run-parent-1"],
        "config": {"model_name_or_path": "org/base-model"},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def client(hub: FakeHub, **kwargs) -> HubClient:
    return HubClient(endpoint=hub.endpoint, **kwargs)


def test_push_creates_the_repo_and_uploads_everything_in_one_commit(hub, run_dir):
    adapter = run_dir / "adapter"
    result = client(hub).push_adapter(adapter, HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    assert isinstance(result, HubPushResult)
    assert result.repo_id == "alice/tiny-lora"
    assert result.url == f"{hub.endpoint}/alice/tiny-lora"
    assert result.commit_sha == hub.head("alice/tiny-lora")
    assert result.pushed_files == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "provenir_files.json",
        "provenir_run_manifest.json",
    ]
    commits = [path for method, path in hub.requests if path.startswith("/api/models/alice/tiny-lora/commit/")]
    assert commits == ["/api/models/alice/tiny-lora/commit/main"]
    stored = hub.files("alice/tiny-lora")
    assert stored["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    assert stored["adapter_config.json"] == (adapter / "adapter_config.json").read_bytes()
    assert json.loads(stored["provenir_run_manifest.json"])["run_id"] == "run-20260101-abc"
    # the weights went through LFS (the batch API and an upload), not inline in the commit
    assert ("PUT", f"/lfs-upload/{sha256_file(adapter / 'adapter_model.safetensors')}") in hub.requests
    card = stored["README.md"].decode()
    assert card.startswith("---\n")
    for fact in ("run-20260101-abc", "d" * 64, "c" * 64, "run-parent-1", sha256_file(adapter / "adapter_model.safetensors")):
        assert fact in card
    assert "library_name: peft" in card
    assert "\nbase_model:" not in card and "base_model:adapter:/" not in card  # PEFT's card names a local path, which the hub cannot link
    assert "## Provenance" in card and card.index("## Provenance") > card.index("Framework versions")
    assert result.files_sha256["adapter_model.safetensors"] == sha256_file(adapter / "adapter_model.safetensors")


def test_a_second_push_is_a_new_commit_on_the_existing_repo(hub, run_dir, tmp_path):
    adapter = run_dir / "adapter"
    first = client(hub).push_adapter(adapter, HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    changed = tmp_path / "adapter"
    shutil.copytree(adapter, changed)
    (changed / "README.md").write_text("# my own card\n")
    second = client(hub).push_adapter(changed, HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    assert second.commit_sha != first.commit_sha
    assert hub.head("alice/tiny-lora") == second.commit_sha
    card = hub.files("alice/tiny-lora")["README.md"].decode()
    assert card.startswith("---\ntags:\n- provenir\n") and "\n# my own card\n\n## Provenance" in card
    assert "provenir_run_manifest.json" not in second.pushed_files  # no manifest beside this copy


def test_private_push_and_who_can_see_it(hub, run_dir, monkeypatch):
    client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/secret", private=True, token=TOKEN))
    assert hub.repos["alice/secret"].private is True
    with pytest.raises(HubError, match="repository alice/secret not found .*private.*HF_TOKEN"):
        client(hub).model_info("alice/secret")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert client(hub).model_info("alice/secret")["private"] is True


def test_push_to_a_branch_leaves_main_alone(hub, run_dir):
    main = client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    dev = client(hub).push_adapter(
        run_dir / "adapter", HubConfig(repo_id="alice/tiny-lora", token=TOKEN, revision="dev", commit_message="try")
    )
    assert hub.head("alice/tiny-lora", "dev") == dev.commit_sha
    assert hub.head("alice/tiny-lora", "main") == main.commit_sha
    assert dev.revision == "dev"


def test_pull_downloads_the_revision_and_verifies_it(hub, run_dir, tmp_path, monkeypatch):
    adapter = run_dir / "adapter"
    first = client(hub).push_adapter(adapter, HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    changed = tmp_path / "changed"
    shutil.copytree(adapter, changed)
    (changed / "notes.txt").write_text("second version\n")
    client(hub).push_adapter(changed, HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    latest = client(hub).pull_model("alice/tiny-lora", tmp_path / "latest")
    assert latest == tmp_path / "latest"
    assert (latest / "notes.txt").read_text() == "second version\n"
    assert sha256_file(latest / "adapter_model.safetensors") == sha256_file(adapter / "adapter_model.safetensors")

    old = client(hub).pull_model("alice/tiny-lora", tmp_path / "old", revision=first.commit_sha)
    assert not (old / "notes.txt").exists()
    assert (old / "adapter_config.json").read_bytes() == (adapter / "adapter_config.json").read_bytes()


def test_pull_into_the_cache_without_output_dir(hub, run_dir, tmp_path):
    pushed = client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    cache = tmp_path / "cache"
    path = client(hub, token=TOKEN, cache_dir=cache).pull_model("alice/tiny-lora")
    assert path.is_relative_to(cache)
    assert path.name == pushed.commit_sha
    assert (path / "adapter_model.safetensors").read_bytes() == (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_pull_refuses_a_file_that_does_not_match_the_hub_hash(hub, run_dir, tmp_path, name):
    client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    original = hub.files("alice/tiny-lora")[name]
    hub.corrupt[("alice/tiny-lora", name)] = original[:-2] + bytes([original[-2] ^ 1]) + original[-1:]
    with pytest.raises(HubError, match=rf"{name}: hash [0-9a-f]+ does not match the hub's"):
        client(hub, token=TOKEN).pull_model("alice/tiny-lora", tmp_path / "out")
    assert not (tmp_path / "out" / name).exists()


def test_model_info_is_a_plain_dict_with_hashes(hub, run_dir):
    pushed = client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    info = client(hub).model_info("alice/tiny-lora")
    assert info["id"] == "alice/tiny-lora" and info["sha"] == pushed.commit_sha and info["private"] is False
    assert "provenir" in info["tags"] and info["card_data"]["library_name"] == "peft"
    files = {f["path"]: f for f in info["files"]}
    weights = files["adapter_model.safetensors"]
    assert weights["lfs"] is True
    assert weights["sha256"] == sha256_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert weights["size"] == (run_dir / "adapter" / "adapter_model.safetensors").stat().st_size
    assert files["adapter_config.json"]["sha256"] is None and files["adapter_config.json"]["blob_id"]
    json.dumps(info)  # plain data


def test_errors_are_clear_and_never_show_the_token(hub, run_dir, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    hub.echo_auth_in_errors = True
    bad = "hf_wrongTokenWrongToken0000"
    with pytest.raises(HubError) as refused:
        client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/x", token=bad))
    assert "refused the credentials (HTTP 401)" in str(refused.value)
    assert bad not in str(refused.value) and "***" in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__

    with pytest.raises(HubError, match="repository nobody/missing not found"):
        client(hub, token=TOKEN).pull_model("nobody/missing", tmp_path / "x")
    client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/x", token=TOKEN))
    with pytest.raises(HubError, match="revision 'nope' not found in alice/x"):
        client(hub, token=TOKEN).pull_model("alice/x", tmp_path / "y", revision="nope")
    assert TOKEN not in caplog.text and bad not in caplog.text


def test_an_unreachable_hub_is_a_clear_error(online, run_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave the block: nothing listens there
    with pytest.raises(HubError, match=rf"cannot reach the hub at http://127.0.0.1:{port}"):
        HubClient(endpoint=f"http://127.0.0.1:{port}").model_info("alice/x")


def test_offline_mode_is_reported(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        HubClient(endpoint="http://127.0.0.1:9").model_info("alice/x")


def test_token_precedence_config_then_client_then_env(hub, run_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fromEnvironmentNotValid")
    client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/a", token=TOKEN))
    assert hub.auth_headers[-1] == f"Bearer {TOKEN}"
    with pytest.raises(HubError, match="refused the credentials"):
        client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/b"))
    assert hub.auth_headers[-1] == "Bearer hf_fromEnvironmentNotValid"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    client(hub).push_adapter(run_dir / "adapter", HubConfig(repo_id="alice/b"))
    assert "alice/b" in hub.repos
    config = HubConfig(repo_id="alice/b", token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config)


def test_bad_inputs_fail_before_any_request(hub, tmp_path):
    with pytest.raises(ConfigError, match="folder not found"):
        client(hub).push_adapter(tmp_path / "nope", HubConfig(repo_id="alice/x", token=TOKEN))
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="no .safetensors weights to push .*adapter_model.bin"):
        client(hub).push_adapter(tmp_path / "pickled", HubConfig(repo_id="alice/x", token=TOKEN))
    with pytest.raises(ConfigError, match="must look like 'namespace/name'"):
        client(hub).pull_model("../../etc", tmp_path / "x")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="namespace/name"):
        HubConfig(repo_id="no-slash")
    assert hub.requests == []


def test_verify_hash_streams_and_compares(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    digest = sha256_file(path)
    hub_client = HubClient(endpoint="http://127.0.0.1:9")
    assert hub_client.verify_hash(path, digest) is True
    assert hub_client.verify_hash(path, digest.upper()) is True
    assert hub_client.verify_hash(path, "0" * 64) is False
    with pytest.raises(ConfigError, match="64 hex characters"):
        hub_client.verify_hash(path, "abc")
    with pytest.raises(ProvenirError, match="file not found"):
        hub_client.verify_hash(tmp_path / "missing", digest)


def test_pull_checks_the_files_against_provenirs_push_record(hub, run_dir, tmp_path, monkeypatch):
    """A later commit that rewrites a file keeps the hub's own hashes consistent; Provenir's record
    of the push still tells the file changed, and a file added after the push is named too."""
    from huggingface_hub import HfApi

    adapter = run_dir / "adapter"
    client(hub).push_adapter(adapter, HubConfig(repo_id="alice/tiny-lora", token=TOKEN))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    good = client(hub).pull("alice/tiny-lora", tmp_path / "good")
    assert good.verified_against == ["hub", "provenir_files.json"]  # this fixture's manifest lists no artifacts
    assert good.pushed_run_id == "run-20260101-abc" and good.commit_sha == hub.head("alice/tiny-lora")
    assert good.files_sha256["adapter_model.safetensors"] == sha256_file(adapter / "adapter_model.safetensors")

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.upload_file(path_or_fileobj=b'{"r": 64}', path_in_repo="adapter_config.json", repo_id="alice/tiny-lora")
    with pytest.raises(HubError, match=r"adapter_config.json: sha256 [0-9a-f]+ differs from the push record's"):
        client(hub).pull("alice/tiny-lora", tmp_path / "rewritten")
    assert not (tmp_path / "rewritten" / "adapter_config.json").exists()
    api.upload_file(path_or_fileobj=b"x", path_in_repo="extra.py", repo_id="alice/tiny-lora")
    with pytest.raises(HubError, match=r"extra.py: not in the push record"):
        client(hub).pull("alice/tiny-lora", tmp_path / "added")


def test_publish_and_pull_are_runs_in_the_lineage(hub, tiny_model_dir, tmp_path, monkeypatch):
    from provenir.adapters.hub import record_publish_run, record_pull_run
    from provenir.core.config import RunConfig
    from provenir.core.run import RunRecorder, verify_run
    from provenir.core.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    rec = RunRecorder(store, RunConfig(name="sft"), dataset_hash="0" * 64)
    make_adapter(tiny_model_dir, rec.workdir / "adapter", seed=3)
    trained = rec.finish({"loss": 0.1})
    adapter = store.local_run_dir(trained.run_id) / "adapter"
    pushed = client(hub).push_adapter(adapter, HubConfig(repo_id="alice/lineage", token=TOKEN))
    assert pushed.run_id == trained.run_id
    publish = record_publish_run(store, pushed, adapter)
    assert publish.kind == "publish" and publish.provenance == [trained.run_id]
    assert publish.inputs["hub"]["commit_sha"] == pushed.commit_sha
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    pulled = client(hub).pull("alice/lineage", tmp_path / "pulled")
    assert pulled.verified_against == ["hub", "provenir_files.json", "run manifest"]
    pull = record_pull_run(store, pulled)
    assert pull.kind == "pull" and pull.provenance == [trained.run_id]
    assert verify_run(store, publish.run_id).ok and verify_run(store, pull.run_id).ok
    assert set(store.descendants(trained.run_id)) >= {publish.run_id, pull.run_id}
    assert pulled.verified_against[-1] == f"store run {trained.run_id}"
    (tmp_path / "pulled" / "adapter_config.json").write_text("{}")
    assert "input:pulled" in {c.name for c in verify_run(store, pull.run_id).checks if not c.ok}

    # the hub rewritten consistently (the file, Provenir's record, the manifest): the store still knows
    from huggingface_hub import CommitOperationAdd, HfApi

    files = hub.files("alice/lineage")
    record = json.loads(files["provenir_files.json"])
    forged = b'{"r": 64}'
    record["files"]["adapter_config.json"] = __import__("hashlib").sha256(forged).hexdigest()
    manifest = json.loads(files["provenir_run_manifest.json"])
    manifest["artifacts"]["adapter/adapter_config.json"] = record["files"]["adapter_config.json"]
    record["files"]["provenir_run_manifest.json"] = __import__("hashlib").sha256(
        json.dumps(manifest).encode()).hexdigest()
    HfApi(endpoint=hub.endpoint, token=TOKEN).create_commit("alice/lineage", commit_message="forge", operations=[
        CommitOperationAdd("adapter_config.json", forged),
        CommitOperationAdd("provenir_run_manifest.json", json.dumps(manifest).encode()),
        CommitOperationAdd("provenir_files.json", json.dumps(record).encode())])
    forged_pull = client(hub).pull("alice/lineage", tmp_path / "forged")  # every check on the hub passes
    with pytest.raises(HubError, match=rf"adapter_config.json differ from run {trained.run_id} in the store"):
        record_pull_run(store, forged_pull)
