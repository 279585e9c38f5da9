"""The Hub, without internet: real `push_to_hub` / `from_pretrained("user/name")` through huggingface_hub's own client
against tests/hub_server.py (127.0.0.1, bounded), and a pre-populated Hub cache read with `HF_HUB_OFFLINE=1`.

Every client runs in a subprocess: huggingface_hub reads `HF_ENDPOINT` and `HF_HOME` when it is imported, and a
fresh process also proves that nothing registered in the test process helps the loading.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, tiny_model
from hub_server import FakeHub, git_blob_sha1
from safetensors.torch import save_file
from tiny_tokenizers import gpt2_tokenizer
from transformers import AutoModelForCausalLM

from compressed_embeddings import CompressedEmbeddingConfig, compress_model, model_card
from compressed_embeddings.cards import CARD_MARKER, write_model_card
from compressed_embeddings.hub import hub_model_id
from compressed_embeddings.modeling import CODE_FILES

TESTS = Path(__file__).resolve().parent
TIMEOUT = 300  # seconds for any one client process


def compressed(family: str, k: int = 8):
    return compress_model(tiny_model(family), CompressedEmbeddingConfig(method="svd", code_dim=k), show_progress=False)


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **env}
    )
    assert result.returncode == 0, f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    return result


def results_of(result: subprocess.CompletedProcess) -> list[dict]:
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS="))
    return json.loads(line[len("RESULTS=") :])


def front_matter(readme: bytes) -> tuple[dict, str]:
    text = readme.decode()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, text[:300]
    return yaml.safe_load(match.group(1)), match.group(2)


@pytest.fixture(scope="module")
def hub():
    with FakeHub(lifetime_s=900, max_requests=3000) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("pushed")
    run([str(TESTS / "hub_push.py"), str(out)], hub.client_env(out / "hf_home"))
    return out / "manifest.json", json.loads((out / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------- what was pushed
def test_pushed_repos_hold_weights_code_tokenizer_and_card(hub, pushed):
    _, manifest = pushed
    for entry in manifest:
        files = hub.files(entry["repo"], entry["revision"] or "main")
        assert {"config.json", "model.safetensors", "README.md", *CODE_FILES} <= set(files), sorted(files)
        assert "tokenizer.json" in files and "tokenizer_config.json" in files
        assert not [name for name in files if name.endswith(".bin")]
        config = json.loads(files["config.json"])
        assert config["model_type"] == f"compressed_{entry['family']}"
        assert config["compressed_embedding"]["code_dim"] == entry["k"]
        assert set(entry["auto_classes"]) <= set(config["auto_map"]) and "AutoConfig" in config["auto_map"]
        # The code files are this package's, byte for byte.
        for name in CODE_FILES:
            assert files[name] == (REPO / "compressed_embeddings" / name).read_bytes(), name

        meta, body = front_matter(files["README.md"])
        assert meta["library_name"] == "transformers"
        assert meta["base_model"] == f"org/tiny-{entry['family']}"  # recorded at compress time from the Hub id
        assert {"compressed-embeddings", "svd"} <= set(meta["tags"])
        assert meta["pipeline_tag"] == {"gpt2": "text-generation", "bert": "fill-mask"}[entry["family"]]
        assert CARD_MARKER in body and f"# {entry['repo'].split('/')[1]}" in body
        assert f"| code size k | {entry['k']} |" in body
        vocab, hidden, k = 99, 32, entry["k"]
        stored = vocab * k + k * hidden  # SVD: codes + a bias-free linear decoder
        assert f"| compression ratio | {vocab * hidden / stored:.2f}x (parameters) |" in body
        assert f"{(vocab * hidden - stored) * 4:,} bytes saved" in body
        # The quality figures are the ones measured when that model was compressed, and only those.
        for name, label in [
            ("mean_cosine", "mean cosine similarity, decoded vs original rows"),
            ("min_cosine", "minimum cosine similarity over rows"),
            ("relative_frobenius_error", "relative Frobenius error"),
        ]:
            assert f"| {label} | {entry['report'][name]:.4f} |" in body
        quality = body.split("## Quality")[1].split("## How to load")[0]
        labels = {line.split("|")[1].strip() for line in quality.splitlines() if line.startswith("| ")}
        assert labels - {"figure"} == {
            "mean cosine similarity, decoded vs original rows",
            "minimum cosine similarity over rows",
            "relative Frobenius error",
            "norm ratio (decoded / original)",
            "compression time",
        }
        # Both ways to load, with the repo id and the Auto class of the saved head.
        auto = entry["auto_classes"][0]
        assert "import compressed_embeddings" in body
        assert f'{auto}.from_pretrained("{entry["repo"]}")' in body
        assert f'{auto}.from_pretrained("{entry["repo"]}", trust_remote_code=True)' in body
    # Every README.md that went through create_commit was submitted to /api/validate-yaml first.
    assert len(hub.validated_yaml) >= len(manifest)


def test_hand_written_card_is_kept_and_completed(hub, pushed):
    files = hub.files("user/notes-gpt2-ce")
    meta, body = front_matter(files["README.md"])
    assert "# My notes" in body and "Hand-written." in body and CARD_MARKER not in body
    assert meta["license"] == "mit"
    assert meta["library_name"] == "transformers" and meta["base_model"] == "org/tiny-gpt2"
    assert {"compressed-embeddings", "my-tag"} <= set(meta["tags"])
    assert "model.safetensors" in files and "modeling.py" in files


def test_save_pretrained_push_to_hub_uploads_code_files_and_card(hub, pushed):
    """transformers' own `save_pretrained(push_to_hub=True)` uploads before our code files would be written; the
    compressed classes upload after."""
    files = hub.files("user/saved-gpt2-ce")
    assert {"config.json", "model.safetensors", "README.md", *CODE_FILES} <= set(files)
    meta, body = front_matter(files["README.md"])
    assert meta["base_model"] == "org/tiny-gpt2" and 'from_pretrained("user/saved-gpt2-ce")' in body


def test_revisions_name_different_weights(hub, pushed):
    _, manifest = pushed
    gpt2 = {entry["revision"] or "main": entry["k"] for entry in manifest if entry["family"] == "gpt2"}
    assert len(gpt2) == 3 and sorted(gpt2.values()) == [4, 6, 8]
    for revision, k in gpt2.items():
        config = json.loads(hub.files("user/tiny-gpt2-ce", revision)["config.json"])
        assert config["compressed_embedding"]["code_dim"] == k


# ------------------------------------------------------------------------------------------- loading by repo id
@pytest.mark.parametrize("mode", ["import", "remote"])
def test_load_by_repo_id_in_fresh_process(hub, pushed, tmp_path, mode):
    manifest_path, manifest = pushed
    before = len(hub.requests)
    results = results_of(run([str(TESTS / "hub_load.py"), mode, str(manifest_path)], hub.client_env(tmp_path)))
    assert results[-1] == {"package_imported": mode == "import"}
    rows = results[:-1]
    assert len(rows) == sum(len(entry["auto_classes"]) for entry in manifest)
    for entry in manifest:
        got = [r for r in rows if r["repo"] == entry["repo"] and r["revision"] == entry["revision"]]
        assert [r["auto_class"] for r in got] == entry["auto_classes"]
        for row in got:
            assert row["class"].startswith("Compressed") and row["code_dim"] == entry["k"], row
            if mode == "remote":  # the code files came from the repo, at the loaded commit
                assert row["module"].startswith("transformers_modules.user."), row
            else:
                assert row["module"] == "compressed_embeddings.modeling", row
            assert row["max_abs_diff"] is not None and row["max_abs_diff"] < 1e-6, row
        expected_ids = {"gpt2": [5, 6, 7], "bert": [2, 5, 6, 7, 3]}[entry["family"]]
        assert got[-1]["tokenizer_ids"] == expected_ids
    # The weights really travelled over HTTP from the fake Hub, for every pushed revision (code files identical
    # across revisions are fetched once, then only checked with HEAD: same ETag, same blob in the cache).
    downloads = {path for method, path, status in hub.requests[before:] if method == "GET" and status == 200}
    checked = {path for method, path, status in hub.requests[before:] if status == 200}
    for entry in manifest:
        revision = entry["revision"] or "main"
        commit = revision if re.fullmatch("[0-9a-f]{40}", revision) else hub.head(entry["repo"], revision)
        assert f"/{entry['repo']}/resolve/{commit}/model.safetensors" in downloads
        if mode == "remote":
            assert f"/{entry['repo']}/resolve/{commit}/modeling.py" in checked


def test_cli_compress_push_to_hub(hub, tmp_path):
    source = tmp_path / "source"
    tiny_model("gpt2").save_pretrained(source)
    gpt2_tokenizer().save_pretrained(source)
    output = tmp_path / "out"
    args = ["-m", "compressed_embeddings", "compress", str(source), "--method", "svd", "--code-dim", "8"]
    args += ["--output", str(output), "--quiet", "--push-to-hub", "user/cli-gpt2", "--base-model", "org/tiny-gpt2"]
    result = run(args, hub.client_env(tmp_path / "hf_home"))
    assert "Pushed to" in result.stdout
    files = hub.files("user/cli-gpt2")
    local = {path.name for path in output.iterdir()}
    assert local <= set(files), local - set(files)  # everything written locally went up
    assert {"compression_report.json", "tokenizer.json", "model.safetensors", *CODE_FILES} <= set(files)
    meta, body = front_matter(files["README.md"])
    assert meta["base_model"] == "org/tiny-gpt2" and "compressed-embeddings" in meta["tags"]
    report = json.loads(files["compression_report.json"])
    assert f"| mean cosine similarity, decoded vs original rows | {report['mean_cosine']:.4f} |" in body
    assert 'AutoModelForCausalLM.from_pretrained("user/cli-gpt2", trust_remote_code=True)' in body
    assert files["README.md"] == (output / "README.md").read_bytes()  # the local card names the repo too


# ------------------------------------------------------------------------------------------- offline cache
def populate_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str) -> Path:
    """Lay `folder` out as huggingface_hub's cache does after a download of `repo_id` at `commit`:
    `models--user--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/main}`."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        etag = git_blob_sha1(data)
        (root / "blobs" / etag).write_bytes(data)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", etag))
    return root


@pytest.fixture(scope="module")
def offline_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    model = compressed("gpt2")
    folder = root / "folder"
    model.save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)
    ids = torch.randint(5, 99, (2, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = {"input_ids": ids, "logits": model(input_ids=ids).logits}
        reference["hidden"] = model.base_model(input_ids=ids).last_hidden_state
    save_file(reference, str(root / "reference.safetensors"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    populate_hub_cache(root / "hub", "user/cached-gpt2-ce", folder, commit)
    entries = [
        {"repo": "user/cached-gpt2-ce", "revision": revision, "k": 8, "family": "gpt2"}
        | {"auto_classes": ["AutoModelForCausalLM", "AutoModel"], "reference": str(root / "reference.safetensors")}
        for revision in (None, commit)
    ]
    (root / "manifest.json").write_text(json.dumps(entries))
    return root


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_load_from_prepopulated_cache_offline(offline_cache, tmp_path, mode):
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(offline_cache / "hub"),
        "HF_HOME": str(tmp_path / "hf_home"),  # modules cache for the remote code: empty
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there: any network access would fail
    }
    results = results_of(run([str(TESTS / "hub_load.py"), mode, str(offline_cache / "manifest.json")], env))
    assert results[-1] == {"package_imported": mode == "import"}
    assert len(results) == 5
    for row in results[:-1]:
        assert row["class"].startswith("Compressed") and row["max_abs_diff"] < 1e-6, row
        assert row["module"].startswith("transformers_modules.") == (mode == "remote"), row
    assert results[-2]["tokenizer_ids"] == [5, 6, 7]


# ------------------------------------------------------------------------------------------- cards, in process
def test_card_of_a_reloaded_model_states_no_figures(tmp_path):
    model = compressed("llama")
    model.save_pretrained(tmp_path / "a")
    meta, body = front_matter((tmp_path / "a" / "README.md").read_bytes())
    assert "base_model" not in meta  # built from a config: no Hub origin to name
    assert "mean cosine similarity" in body and "PATH_OR_REPO_ID" in body

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    card = model_card(reloaded, repo_id="me/tiny")
    assert "No quality figures are recorded" in card.text and "cosine" not in card.text
    assert card.data.library_name == "transformers" and "compressed-embeddings" in card.data.tags


def test_hand_written_readme_in_folder_is_kept(tmp_path):
    model = compressed("llama")
    model.config.compressed_embedding = {**model.config.compressed_embedding, "base_model": "org/llama"}
    (tmp_path / "README.md").write_text("# Mine\n\nKeep me.\n")
    write_model_card(model, tmp_path)
    meta, body = front_matter((tmp_path / "README.md").read_bytes())
    assert body.strip() == "# Mine\n\nKeep me." and meta["base_model"] == "org/llama"


def test_hub_model_id(tmp_path):
    assert hub_model_id("org/name") == "org/name" and hub_model_id("gpt2") == "gpt2"
    assert hub_model_id(str(tmp_path)) is None and hub_model_id("./x") is None and hub_model_id("") is None
    assert hub_model_id("a/b/c") is None and hub_model_id(None) is None
