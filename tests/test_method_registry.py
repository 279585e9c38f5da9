"""A compression method is one settings dataclass and one function, registered with one call: a toy method defined
here compresses, saves and reloads (both load paths) like the built-in ones, and its settings reach the CLI."""

import json
from dataclasses import dataclass, field

import pytest
import torch
from conftest import run_python, tiny_model
from transformers import AutoModelForCausalLM

from compressed_embeddings import (
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    compress_model,
    configuration,
    methods,
)
from compressed_embeddings.methods import MethodConfig, MethodOutput, register_method, registered_methods


@dataclass
class ToyProjectionConfig(MethodConfig):
    """Settings of a toy method: codes are the rows projected on a random orthonormal basis, times `scale`."""

    name = "toy_projection"
    summary = "a random orthonormal projection (a toy method of the tests)"
    decoder_bias = False
    presets = {"toy": {"scale": 3.0}}

    scale: float = field(default=1.0, metadata={"help": "Factor applied to the codes (the decoder divides it out)."})

    def validate(self) -> None:
        super().validate()
        self.require_number("scale", positive=True)


def toy_projection(matrix: torch.Tensor, config: CompressedEmbeddingConfig, *, show_progress: bool = True):
    generator = torch.Generator().manual_seed(config.seed)
    basis, _ = torch.linalg.qr(torch.randn(matrix.shape[1], config.code_dim, generator=generator))
    return MethodOutput(codes=matrix @ basis * config.scale, decoder_state={"weight": basis / config.scale})


@pytest.fixture
def toy_method(monkeypatch):
    """Register the toy method for one test (the registries are restored afterwards)."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(configuration, "METHOD_CONFIGS", dict(configuration.METHOD_CONFIGS))
    register_method(ToyProjectionConfig, toy_projection)  # the one call
    return ToyProjectionConfig


def test_one_call_makes_a_method_known_everywhere(toy_method):
    assert "toy_projection" in registered_methods() and "toy_projection" in methods.KNOWN_METHODS
    config = CompressedEmbeddingConfig(method="toy_projection", code_dim=8, scale=2.0)
    assert config.method_config == ToyProjectionConfig(scale=2.0) and config.scale == 2.0
    assert config.use_decoder_bias is False  # the method's default decoder bias
    assert CompressedEmbeddingConfig.preset("toy").scale == 3.0
    with pytest.raises(CompressedEmbeddingConfigError, match="scale is invalid: got -1"):
        CompressedEmbeddingConfig(method="toy_projection", scale=-1)
    with pytest.raises(ValueError, match="already registered"):
        register_method(ToyProjectionConfig, toy_projection)


def test_registering_a_setting_named_like_a_config_field_is_refused(toy_method):
    @dataclass
    class Clashing(MethodConfig):
        name = "clashing"
        seed: int = 0

    with pytest.raises(ValueError, match=r"\['seed'\]"):
        register_method(Clashing, toy_projection)


def test_the_toy_method_compresses_saves_and_reloads_by_both_paths(toy_method, tmp_path):
    model = compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="toy_projection", code_dim=16, scale=2.0)
    )
    assert model.compression_report.method == "toy_projection" and model.compression_report.mean_cosine > 0.5
    ids = torch.tensor([[1, 5, 9, 2, 40, 98]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "toy")
    block = json.loads((tmp_path / "toy" / "config.json").read_text())["compressed_embedding"]
    assert block["method"] == "toy_projection" and block["method_config"] == {"scale": 2.0}
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "toy").eval()  # the package's classes
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, logits, rtol=0, atol=1e-6)
    # Loading needs no method code: a fresh process through the checkpoint's own code, and one through the package
    # (where the toy method is not registered).
    torch.save(logits, tmp_path / "logits.pt")
    for preamble, remote in (("", True), ("import compressed_embeddings", False)):
        code = f"""
import sys, torch, transformers
{preamble}
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code={remote}).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([[1, 5, 9, 2, 40, 98]])).logits
expected = torch.load(sys.argv[2])
assert torch.allclose(logits, expected, rtol=0, atol=1e-6), (logits - expected).abs().max()
assert model.config.compressed_embedding["method_config"] == {{"scale": 2.0}}
print(type(model).__module__)
"""
        result = run_python(code, str(tmp_path / "toy"), str(tmp_path / "logits.pt"))
        assert result.stdout.strip().startswith("transformers_modules" if remote else "compressed_embeddings")


def test_the_toy_method_settings_are_cli_flags(toy_method):
    from compressed_embeddings.cli import build_parser

    parser = build_parser()
    compress = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "compress")[1]
    flags = {option: action for action in compress._actions for option in action.option_strings}
    assert "--scale" in flags and "Factor applied to the codes" in flags["--scale"].help
    assert "toy_projection" in flags["--method"].help


def test_unknown_methods_name_the_registered_ones():
    with pytest.raises(CompressedEmbeddingConfigError, match="'autoencoder', 'svd', 'transform_coding'"):
        CompressedEmbeddingConfig(method="pca")
