"""Checkpoints written in format 1 (compressed_embeddings 0.1.0 before the method settings were nested) still load, by
both load paths, with the logits they were saved with; re-saved, they are written in the current format."""

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from conftest import load_in_fresh_process
from safetensors.torch import load_file

from compressed_embeddings import CompressedEmbeddingConfig
from compressed_embeddings.version import FORMAT_VERSION

FIXTURES = Path(__file__).parent / "fixtures" / "format_v1"
CHECKPOINTS = json.loads((FIXTURES / "checkpoints.json").read_text())["checkpoints"]
AUTO_CLASS = {"LlamaForCausalLM": "AutoModelForCausalLM", "BertForMaskedLM": "AutoModelForMaskedLM"}


def test_the_fixtures_are_format_1_with_flat_settings():
    for name in CHECKPOINTS:
        block = json.loads((FIXTURES / name / "config.json").read_text())["compressed_embedding"]
        assert block["format_version"] == 1 < FORMAT_VERSION
        assert "method_config" not in block and "cosine_weight" in block and "svd_solver" in block


def test_format_1_blocks_read_into_nested_settings():
    for name in CHECKPOINTS:
        block = json.loads((FIXTURES / name / "config.json").read_text())["compressed_embedding"]
        config = CompressedEmbeddingConfig.from_dict(block, require_resolved=True)
        settings = config.method_config
        assert type(settings).name == block["method"]
        for key, value in block.items():  # every setting of its own method is kept; the other methods' are dropped
            if key in {f.name for f in dataclasses.fields(settings)}:
                assert getattr(settings, key) == value
        assert config.use_decoder_bias == (block["method"] != "svd")  # format 1's rule for decoder_bias=None
        assert config.format_version == FORMAT_VERSION and config.to_dict()["format_version"] == 2  # no output_head


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_format_1_checkpoints_load_with_their_logits(mode, tmp_path):
    manifest = [
        {
            "family": entry["family"],
            "path": str(FIXTURES / name),
            "reference": str(FIXTURES / name / "reference.safetensors"),
            "auto_classes": [AUTO_CLASS[entry["class"]], "AutoModel"],
            "saved_auto_class": AUTO_CLASS[entry["class"]],
        }
        for name, entry in CHECKPOINTS.items()
    ]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    results = [r for r in load_in_fresh_process(path, mode) if "family" in r]
    assert len(results) == 2 * len(CHECKPOINTS)
    for result in results:
        assert result["embedding"] == "CompressedEmbedding"
        if result["auto_class"] != "AutoModel":  # (a bare BERT backbone has a pooler, and no MLM head)
            assert not result["missing"] and not result["unexpected"]
        assert result["max_abs_diff"] <= 1e-5, result
        # remote: the checkpoint's own (format 1) code; import: this release's
        assert result["module"].startswith("transformers_modules" if mode == "remote" else "compressed_embeddings")


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_format_1_checkpoint_resaved_is_current_and_equal(name, tmp_path):
    import compressed_embeddings  # noqa: F401  (the package's classes load it)

    auto = getattr(transformers, AUTO_CLASS[CHECKPOINTS[name]["class"]])
    reference = load_file(str(FIXTURES / name / "reference.safetensors"))
    model = auto.from_pretrained(FIXTURES / name).eval()
    model.save_pretrained(tmp_path / "again")
    block = json.loads((tmp_path / "again" / "config.json").read_text())["compressed_embedding"]
    assert block["format_version"] == 2 and isinstance(block["method_config"], dict)  # 3 only with an output_head
    assert "svd_solver" not in block and "cosine_weight" not in block
    again = auto.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        logits = again(input_ids=reference["input_ids"]).logits
    torch.testing.assert_close(logits, reference["logits"], rtol=0, atol=1e-5)
    shutil.rmtree(tmp_path / "again")


def _recipes() -> dict:
    """The recipes `tests/fixtures/make_format_v1.py` wrote the fixtures with."""
    spec = importlib.util.spec_from_file_location("make_format_v1", FIXTURES.parent / "make_format_v1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHECKPOINTS


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_compressing_again_gives_the_tensors_format_1_stored(name, monkeypatch):
    """The same recipe on the same model gives the embedding 0.1.0 stored: bitwise, but for transform coding's float
    tensors (equal to float rounding); moving the methods' settings into their own classes changed no result."""
    import compressed_embeddings.calibration as calibration
    from compressed_embeddings import compress_model

    monkeypatch.setattr(calibration, "CALIBRATION_TOKENS", 16384)  # what the fixtures were written with

    config_name, kwargs, class_name, settings = _recipes()[name]
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(getattr(transformers, config_name)(**kwargs)).eval()
    model = compress_model(model, CompressedEmbeddingConfig(**settings), show_progress=False, calibration=None)
    stored = load_file(str(FIXTURES / name / "model.safetensors"))
    prefix = "model.embed_tokens." if "llama" in name else "bert.embeddings.word_embeddings."
    for key, tensor in model.get_input_embeddings().state_dict().items():
        if tensor.is_floating_point() and name.endswith("transform_coding"):
            # Lloyd-Max sums its buckets in float64 since (issue 19): codebooks and decoder agree to float rounding
            torch.testing.assert_close(tensor, stored[prefix + key], rtol=1e-4, atol=1e-6, msg=key)
        else:
            assert torch.equal(tensor, stored[prefix + key]), key
