"""A damaged checkpoint is refused at load, by both load paths, with `DamagedCheckpointError` naming the file, the
tensor, what is wrong and what to do: values no save writes (checked for every storage format) and bytes other than
the SHA-256 recorded at save (`compressed_embedding.tensor_sha256` in config.json, which is all that can notice one
flipped bit of packed codes). Undamaged checkpoints load with their logits; checkpoints without checksums (saved
before they were written) load with a one-line info.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from conftest import flip_bit, run_python, tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM

from compressed_embeddings import (
    CompressedEmbeddingConfig,
    CorruptCheckpointError,
    DamagedCheckpointError,
    compress_model,
    decompress_model,
)

PREFIX = "model.embed_tokens."
#: The storage formats: dense float codes and a float decoder (SVD), int8 codes with per-row scales, packed codes
#: with an int8 decoder (transform coding).
FORMATS = {
    "float": dict(method="svd", code_dim=8),
    "int8": dict(method="svd", code_dim=8, codes_dtype="int8"),
    "packed": dict(compression_ratio=4, kl_steps=2),
}


def _set(key: str, index, value):
    def edit(tensors: dict) -> None:
        tensors[PREFIX + key][index] = value if not callable(value) else value(tensors[PREFIX + key][index])

    return edit


#: name -> (format, damage: a tensor edit, or the tensor to flip one bit of in the file; tensor; what the error says)
DAMAGES = {
    "float codes: an infinite value": ("float", _set("codes", (5, 3), float("inf")), "codes", "1 NaN or infinite"),
    "float codes: a flipped bit": ("float", "codes", "codes", "other bytes than were saved"),
    "float decoder: a NaN": ("float", _set("decoder.weight", (0, 0), float("nan")), "decoder.weight", "NaN"),
    "int8 codes: a scale <= 0": ("int8", _set("code_scales", 7, lambda s: -s), "code_scales", r"scale\(s\) <= 0"),
    "int8 codes: a flipped bit": ("int8", "codes", "codes", "other bytes than were saved"),
    "int8 codes: a -128": ("int8", _set("codes", (4, 1), -128), "codes", "-128, which int8 rounding never writes"),
    "packed: a tier id out of range": ("packed", _set("packed.row_tiers", 17, 200), "packed.row_tiers", "tier 200"),
    "packed: rows per tier": (
        "packed",
        _set("packed.row_tiers", 17, lambda t: 1 - t.clamp(max=1)),
        "packed.row_tiers",
        "rows in the tiers, config.json",
    ),  # fmt: skip
    "packed: a NaN in a codebook": (
        "packed",
        _set("packed.codebooks.0", 1, float("nan")),
        "packed.codebooks.0",
        "NaN",
    ),
    "packed: a flipped bit in the planes": ("packed", "packed.planes.0", "packed.planes.0", "other bytes than were"),
    "int8 decoder: a NaN scale": ("packed", _set("decoder.scales", 2, float("nan")), "decoder.scales", "NaN"),
    "int8 decoder: a flipped bit": ("packed", "decoder.qweight", "decoder.qweight", "other bytes than were saved"),
}


def damage(source: Path, target: Path, how) -> Path:
    """A copy of the checkpoint `source` with one stored tensor damaged (config.json untouched)."""
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    if isinstance(how, str):
        flip_bit(weights, PREFIX + how)
    else:
        tensors = load_file(weights)
        how(tensors)
        save_file(tensors, weights, {"format": "pt"})
    return target


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One checkpoint per storage format, each damaged copy, and the logits of the undamaged models."""
    root = tmp_path_factory.mktemp("damaged")
    ids = torch.randint(1, 1024, (2, 9), generator=torch.Generator().manual_seed(1))
    folders, references = {}, {}
    for name, settings in FORMATS.items():
        model = compress_model(
            tiny_model("llama", vocab_size=1024), CompressedEmbeddingConfig(**settings), calibration=None,
            show_progress=False,
        )  # fmt: skip
        model.save_pretrained(root / name)
        with torch.no_grad():
            save_file({"input_ids": ids, "logits": model(ids).logits}, root / f"{name}-reference.safetensors")
        folders[name], references[name] = str(root / name), str(root / f"{name}-reference.safetensors")
    for number, (name, (base, how, _, _)) in enumerate(DAMAGES.items()):
        folders[name] = str(damage(root / base, root / f"damaged-{number}", how))
    (root / "manifest.json").write_text(json.dumps({"folders": folders, "references": references}))
    return root


LOAD = """
import json, sys
import torch, transformers
from safetensors.torch import load_file
mode, manifest = sys.argv[1], json.load(open(sys.argv[2]))
if mode == "import":
    import compressed_embeddings
results = {}
for name, path in manifest["folders"].items():
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, trust_remote_code=mode == "remote").eval()
    except Exception as error:
        results[name] = {"error": [c.__name__ for c in type(error).__mro__], "message": str(error)}
        continue
    reference = load_file(manifest["references"][name])
    with torch.no_grad():
        logits = model(reference["input_ids"]).logits
    results[name] = {"module": type(model).__module__, "diff": float((logits - reference["logits"]).abs().max())}
results["imported"] = "compressed_embeddings" in sys.modules
print("RESULTS=" + json.dumps(results))
"""


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_damaged_checkpoints_are_refused_by_both_load_paths(checkpoints, mode):
    output = run_python(LOAD, mode, str(checkpoints / "manifest.json")).stdout
    results = json.loads(next(line for line in output.splitlines() if line.startswith("RESULTS="))[8:])
    assert results.pop("imported") == (mode == "import")
    for name in FORMATS:  # undamaged: loads, with the logits it was saved with
        assert "error" not in results[name], results[name]
        assert results[name]["diff"] <= 1e-6, (name, results[name])
        assert results[name]["module"].startswith("transformers_modules" if mode == "remote" else "compressed_emb")
    for number, (name, (_, _, tensor, what)) in enumerate(DAMAGES.items()):
        result = results[name]
        assert result.get("error", [None])[:2] == ["DamagedCheckpointError", "OSError"], (name, result)
        message = result["message"]
        assert str(checkpoints / f"damaged-{number}" / "model.safetensors") in message, message  # the file
        assert f"tensor '{PREFIX}{tensor}'" in message, message  # the tensor
        assert __import__("re").search(what, message), (what, message)  # what is wrong
        assert "Download it again" in message and "re-create the checkpoint" in message, message  # what to do


# ---------------------------------------------------------------------------------------------- in this process
def test_the_checksums_are_those_of_every_stored_tensor_of_the_embedding(checkpoints):
    for name in FORMATS:
        digests = json.loads((checkpoints / name / "config.json").read_text())["compressed_embedding"]["tensor_sha256"]
        with safe_open(checkpoints / name / "model.safetensors", "pt") as handle:
            keys = sorted(key for key in handle.keys() if key.startswith(PREFIX))
            assert sorted(digests) == keys
            for key in keys:  # plain SHA-256 of the bytes as stored: anyone can recompute it
                data = handle.get_tensor(key).contiguous().view(torch.uint8).numpy()
                assert digests[key] == hashlib.sha256(data).hexdigest()


def test_the_exception_type(checkpoints):
    assert issubclass(DamagedCheckpointError, OSError) and issubclass(CorruptCheckpointError, DamagedCheckpointError)


@pytest.fixture
def info_log():
    """What the package logs at INFO level (transformers' loggers do not propagate to the root logger)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = transformers.utils.logging.get_logger("compressed_embeddings")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _without_checksums(folder: Path) -> Path:
    config = json.loads((folder / "config.json").read_text())
    del config["compressed_embedding"]["tensor_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_without_checksums_values_are_still_checked_and_an_info_says_bytes_are_not(checkpoints, tmp_path, info_log):
    old = _without_checksums(damage(checkpoints / "packed", tmp_path / "old", lambda tensors: None))
    AutoModelForCausalLM.from_pretrained(old)
    lines = [r.getMessage() for r in info_log if "not verified" in r.getMessage()]
    assert lines == [f"{old}: the bytes of the compressed embedding are not verified (no checksums in config.json: "
                     "saved before they were written; values checked)."]  # fmt: skip
    nan = _without_checksums(
        damage(checkpoints / "packed", tmp_path / "nan", DAMAGES["packed: a NaN in a codebook"][1])
    )
    with pytest.raises(DamagedCheckpointError, match="codebooks.0' holds 1 NaN"):
        AutoModelForCausalLM.from_pretrained(nan)
    # the known limit: without checksums, a flipped bit of packed codes is a valid code (docs/reliability.md)
    AutoModelForCausalLM.from_pretrained(
        _without_checksums(damage(checkpoints / "packed", tmp_path / "bit", "packed.planes.0"))
    )


def test_checked_whatever_the_class_or_dtype_it_is_loaded_in(checkpoints, tmp_path):
    good = checkpoints / "packed"
    model = AutoModel.from_pretrained(good)  # the base model: weight names without `model.`
    assert type(model).__name__ == "CompressedLlamaModel"
    AutoModelForCausalLM.from_pretrained(good, dtype=torch.bfloat16)  # checksums of the file, not of the cast tensors
    bad = damage(good, tmp_path / "bad", DAMAGES["packed: a tier id out of range"][1])
    with pytest.raises(DamagedCheckpointError, match=f"tensor '{PREFIX}packed.row_tiers' gives row 17 tier 200"):
        AutoModel.from_pretrained(bad)


def test_sharded_checkpoints_are_verified_shard_by_shard(checkpoints, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(checkpoints / "float")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    shard = tmp_path / "sharded" / index[PREFIX + "codes"]
    flip_bit(shard, PREFIX + "codes")
    with pytest.raises(DamagedCheckpointError, match=f"{shard}, tensor '{PREFIX}codes' holds other bytes"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")


def test_a_resave_after_fine_tuning_writes_fresh_checksums(checkpoints, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(checkpoints / "float")
    with torch.no_grad():  # a training step moves the decoder (the codes stay frozen)
        model.get_input_embeddings().decoder.weight.add_(0.01)
    model.save_pretrained(tmp_path / "tuned")
    before = json.loads((checkpoints / "float" / "config.json").read_text())["compressed_embedding"]["tensor_sha256"]
    after = json.loads((tmp_path / "tuned" / "config.json").read_text())["compressed_embedding"]["tensor_sha256"]
    assert after[PREFIX + "codes"] == before[PREFIX + "codes"]
    assert after[PREFIX + "decoder.weight"] != before[PREFIX + "decoder.weight"]
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "tuned")
    assert torch.equal(again.get_input_embeddings().decoder.weight, model.get_input_embeddings().decoder.weight)


def test_decompress_writes_a_stock_checkpoint_without_stale_checksums(checkpoints, tmp_path):
    model = decompress_model(AutoModelForCausalLM.from_pretrained(checkpoints / "packed"))
    model.save_pretrained(tmp_path / "stock")
    assert "tensor_sha256" not in (tmp_path / "stock" / "config.json").read_text()
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "stock")).__name__ == "LlamaForCausalLM"
