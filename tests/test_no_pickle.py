"""No pickle: weights load only from safetensors. Pickle checkpoints (`*.bin`) are refused unless the user opts in with
`use_safetensors=False` (transformers' own switch; the CLI's is `--allow-pickle`), and the package itself contains no
`torch.load` without `weights_only=True` and no pickle import.
"""

import ast
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from compressed_embeddings import (
    CompressedEmbeddingConfig,
    UnsafeCheckpointError,
    cli,
    compress_model,
    compressed_model_class,
)

CompressedLlama = compressed_model_class(LlamaForCausalLM)


class _Payload:
    """A pickle that, when unpickled, creates a file: what a malicious checkpoint would do (with worse commands)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "compressed"
    compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    ).save_pretrained(folder)
    return folder


def _with_pickle(checkpoint: Path, target: Path, *, keep_safetensors: bool, malicious: bool) -> Path:
    shutil.copytree(checkpoint, target)
    if malicious:
        (target / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(target.parent / "PWNED")))
    else:
        torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    if not keep_safetensors:
        (target / "model.safetensors").unlink()
    return target


@pytest.mark.parametrize("loader", [CompressedLlama.from_pretrained, AutoModelForCausalLM.from_pretrained])
def test_a_pickle_checkpoint_is_refused_and_never_unpickled(checkpoint, tmp_path, loader):
    folder = _with_pickle(checkpoint, tmp_path / "ckpt", keep_safetensors=False, malicious=True)
    with pytest.raises(UnsafeCheckpointError, match="only pickle files") as info:
        loader(folder)
    assert "arbitrary code" in str(info.value) and "use_safetensors=False" in str(info.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_even_when_opted_in_transformers_unpickles_weights_only(checkpoint, tmp_path):
    """Defence in depth: with `use_safetensors=False`, transformers uses `torch.load(weights_only=True)`, which
    refuses a pickle that calls arbitrary functions."""
    folder = _with_pickle(checkpoint, tmp_path / "ckpt", keep_safetensors=False, malicious=True)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        CompressedLlama.from_pretrained(folder, use_safetensors=False)
    assert not (tmp_path / "PWNED").exists()


def test_opting_in_loads_a_trusted_pickle_checkpoint(checkpoint, tmp_path, input_ids):
    folder = _with_pickle(checkpoint, tmp_path / "ckpt", keep_safetensors=False, malicious=False)
    loaded = CompressedLlama.from_pretrained(folder, use_safetensors=False)
    reference = CompressedLlama.from_pretrained(checkpoint)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, reference(input_ids).logits)


def test_safetensors_win_over_a_pickle_next_to_them(checkpoint, tmp_path, input_ids):
    folder = _with_pickle(checkpoint, tmp_path / "ckpt", keep_safetensors=True, malicious=True)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert not (tmp_path / "PWNED").exists()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, CompressedLlama.from_pretrained(checkpoint)(input_ids).logits)


def test_cli_refuses_a_pickle_source_unless_allowed(tmp_path, capsys):
    source = tmp_path / "stock"
    tiny_model("llama").save_pretrained(source)
    torch.save(load_file(source / "model.safetensors"), source / "pytorch_model.bin")
    (source / "model.safetensors").unlink()
    args = ["compress", str(source), "--method", "svd", "--code-dim", "8", "--quiet"]
    assert cli.main([*args, "--output", str(tmp_path / "refused")]) == cli.EXIT_USAGE
    assert "--allow-pickle" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert cli.main([*args, "--output", str(tmp_path / "out"), "--allow-pickle"]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert not list((tmp_path / "out").glob("*.bin")), "the output is safetensors only"


# ---------------------------------------------------------------------------------------------- the grep
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_loads(source: str) -> list[str]:
    """Pickle imports, `torch.load` calls without `weights_only=True` (or aliases of it), `allow_pickle=True`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"from {node.module} import")
            if node.module == "torch" and any(alias.name == "load" for alias in node.names):
                found.append("from torch import load")
        elif isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords}
            name = ast.unparse(node.func)
            weights_only = keywords.get("weights_only")
            if name.endswith("torch.load") and not (isinstance(weights_only, ast.Constant) and weights_only.value):
                found.append(f"{ast.unparse(node)}")
            allow = keywords.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value:
                found.append(f"{ast.unparse(node)}")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = [
        "import pickle",
        "import dill as d",
        "from joblib import load",
        "from torch import load",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "numpy.load(path, allow_pickle=True)",
    ]
    for line in bad:
        assert unsafe_loads(line), line
    assert unsafe_loads("torch.load(path, map_location='cpu', weights_only=True)") == []
    assert unsafe_loads("from safetensors.torch import load_file\nload_file(path)") == []


def test_the_package_never_unpickles():
    files = sorted((REPO / "compressed_embeddings").rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(path.relative_to(REPO)): unsafe_loads(path.read_text()) for path in files}
    assert {path: found for path, found in offenders.items() if found} == {}
