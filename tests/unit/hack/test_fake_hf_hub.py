"""The fake hub is judged by the real clients: huggingface_hub and transformers, pointed at it
with ``HF_ENDPOINT``, download, describe and refuse exactly as they do against the Hub.

The clients run in a subprocess: huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once,
at import, and the suite runs offline (``HF_HUB_OFFLINE=1``), so only a process whose environment
this test sets can talk to the fake hub.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hack.fake_hf_hub import FakeHub
from hack.tiny_model import DEFAULT_DIR, ensure_tiny_model

REPO_ID = "kaito-test/tiny-phi-3-uncatalogued"
GATED_ID = "kaito-test/tiny-phi-3-gated"
TOKEN = "hf_test_token"

CLIENT = textwrap.dedent("""
    import json, sys
    from huggingface_hub import (get_safetensors_metadata, hf_hub_download, model_info, snapshot_download)
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError)
    repo, gated, token = sys.argv[1:4]
    out = {}
    info = model_info(repo)
    out["sha"], out["siblings"] = info.sha, sorted(s.rfilename for s in info.siblings)
    out["config"] = json.load(open(hf_hub_download(repo, "config.json")))["architectures"]
    meta = get_safetensors_metadata(repo)
    out["params"] = meta.parameter_count
    out["snapshot"] = snapshot_download(repo)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(repo)
    tok = AutoTokenizer.from_pretrained(repo)
    out["numel"] = sum(p.numel() for p in model.parameters())
    out["tokens"] = len(tok("hello world")["input_ids"])
    errors = {}
    for what, call in [
        ("missing_repo", lambda: hf_hub_download("kaito-test/nope", "config.json")),
        ("missing_file", lambda: hf_hub_download(repo, "nope.json")),
        ("gated_no_token", lambda: hf_hub_download(gated, "config.json", token=False)),
        ("gated_bad_token", lambda: hf_hub_download(gated, "config.json", token="hf_wrong")),
    ]:
        try:
            call()
            errors[what] = None
        except (GatedRepoError, EntryNotFoundError, RepositoryNotFoundError) as exc:
            errors[what] = type(exc).__name__
    out["errors"] = errors
    out["gated_info"] = model_info(gated, token=False).gated
    granted = hf_hub_download(gated, "config.json", token=token)
    out["gated_with_token"] = json.load(open(granted))["architectures"]
    print(json.dumps(out))
""")


def run_client(hub: FakeHub, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(cache), HF_HUB_DISABLE_XET="1")
    res = subprocess.run([sys.executable, "-c", CLIENT, REPO_ID, GATED_ID, TOKEN], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny() -> Path:
    return ensure_tiny_model(DEFAULT_DIR)


def test_real_clients_download_describe_and_refuse(tiny: Path, tmp_path: Path) -> None:
    with FakeHub() as hub:
        hub.add_repo(REPO_ID, tiny)
        hub.add_repo(GATED_ID, tiny, token=TOKEN)
        first = run_client(hub, tmp_path / "hf")
        weights = (tiny / "model.safetensors").stat().st_size
        cold = hub.bytes_served(REPO_ID, "model.safetensors")
        # the weights went over the wire once (snapshot_download and from_pretrained share the
        # cache), beside get_safetensors_metadata's range read of the header (never cached)
        assert weights <= cold < 2 * weights
        second = run_client(hub, tmp_path / "hf")
        header_read = cold - weights
        assert hub.bytes_served(REPO_ID, "model.safetensors") - cold == header_read  # warm: no weights

    assert first["sha"] == second["sha"] and len(first["sha"]) == 40
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(first["siblings"])
    assert first["config"] == ["Phi3ForCausalLM"]
    # huggingface_hub's own count from the safetensors header equals transformers' parameters
    assert sum(first["params"].values()) == first["numel"] > 0
    assert first["tokens"] > 0
    assert Path(first["snapshot"], "config.json").is_file()
    assert first["errors"] == {
        "missing_repo": "RepositoryNotFoundError", "missing_file": "RemoteEntryNotFoundError",
        "gated_no_token": "GatedRepoError", "gated_bad_token": "GatedRepoError",
    }
    assert first["gated_info"] == "manual"
    assert first["gated_with_token"] == ["Phi3ForCausalLM"]


def test_a_copy_with_another_architecture_is_served_as_written(tiny: Path, tmp_path: Path) -> None:
    """Tests make repos by copying a checkpoint and editing its config: the hub serves what is on disk."""
    repo_dir = tmp_path / "repo"
    shutil.copytree(tiny, repo_dir)
    config = json.loads((repo_dir / "config.json").read_text())
    (repo_dir / "config.json").write_text(json.dumps({**config, "architectures": ["MambaForCausalLM"]}))
    import urllib.request

    with FakeHub() as hub:
        hub.add_repo("kaito-test/mamba", repo_dir)
        with urllib.request.urlopen(f"{hub.url}/kaito-test/mamba/resolve/main/config.json") as resp:
            assert json.loads(resp.read())["architectures"] == ["MambaForCausalLM"]
            assert len(resp.headers["X-Repo-Commit"]) == 40
        req = urllib.request.Request(f"{hub.url}/kaito-test/mamba/resolve/main/model.safetensors",
                                     headers={"Range": "bytes=0-7"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and len(resp.read()) == 8
        assert hub.bytes_served("kaito-test/mamba") == 8 + len((repo_dir / "config.json").read_bytes())


def test_a_missing_file_names_the_commit_so_clients_cache_its_absence(tiny: Path) -> None:
    """As the Hub does: huggingface_hub writes ``.no_exist`` for the commit only when the 404 of a
    missing file carries ``X-Repo-Commit``, and then a pinned revision never asks again (a
    restarted serve replica, docs/models.md)."""
    with FakeHub() as hub:
        repo = hub.add_repo(REPO_ID, tiny)
        request = urllib.request.Request(f"{hub.url}/{REPO_ID}/resolve/{repo.sha}/adapter_config.json",
                                         method="HEAD")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 404
    assert err.value.headers["X-Error-Code"] == "EntryNotFound"
    assert err.value.headers["X-Repo-Commit"] == repo.sha


def test_a_repo_can_stand_at_a_pinned_commit(tiny: Path) -> None:
    """A catalog preset pins a commit (presets/catalog.yaml ``revision``) and its serve pods ask for
    exactly that one, so a stand-in must be served at it; any other revision is not found."""
    pinned = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
    with FakeHub() as hub:
        hub.add_repo(REPO_ID, tiny, commit=pinned)
        with urllib.request.urlopen(f"{hub.url}/{REPO_ID}/resolve/{pinned}/config.json", timeout=10) as resp:
            assert resp.headers["X-Repo-Commit"] == pinned
        with urllib.request.urlopen(f"{hub.url}/api/models/{REPO_ID}", timeout=10) as resp:
            assert json.loads(resp.read())["sha"] == pinned
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{hub.url}/{REPO_ID}/resolve/{'f' * 40}/config.json", timeout=10)
        assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "RevisionNotFound"
        with pytest.raises(ValueError):
            hub.add_repo(REPO_ID, tiny, commit="main")
