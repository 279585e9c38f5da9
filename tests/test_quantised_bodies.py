"""A compressed embedding on a torchao weight-only quantised body: the quantiser leaves the decoder and the codes
alone (their linear layers are not `nn.Linear`s), and the quantised model saves and reloads by both load paths
(package imported, and `trust_remote_code=True` without it). docs/guides/quantised-bodies.md is the recipe."""

import copy
import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_python, tiny_model
from safetensors.torch import save_file
from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_
from torchao.quantization.utils import compute_error
from transformers import AutoModelForCausalLM, TorchAoConfig

from compressed_embeddings import CompressedEmbedding, CompressedEmbeddingConfig, compress_model
from compressed_embeddings.layer import DecoderLinear, Int8Linear

#: The tiny Llama of conftest with an intermediate size that int4's groups of 32 divide.
BODY = {"intermediate_size": 64}
#: The decoders a method can give: transform coding's default int8 linear one, its float one, SVD's, an MLP.
DECODERS = {
    "transform_coding": CompressedEmbeddingConfig(compression_ratio=4),
    "transform_coding_float": CompressedEmbeddingConfig(compression_ratio=2, decoder_dtype="float"),
    "svd": CompressedEmbeddingConfig(method="svd", code_dim=8),
    "autoencoder_mlp": CompressedEmbeddingConfig(
        method="autoencoder", code_dim=8, decoder_hidden_dims=[16], max_steps=2
    ),
}
#: Weight-only configs that run on the CPU (torchao 0.18): int8 per channel; int4 in groups of 32, the values stored
#: one per int8 byte (`Int4WeightOnlyConfig`'s packed formats need CUDA or its `mslk` kernels).
QUANTISERS = {
    "int8": lambda: Int8WeightOnlyConfig(),
    "int4": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
}
#: Signal-to-quantisation-noise ratio (dB, torchao's `compute_error`) of the quantised model's logits against the
#: unquantised one's, at least (measured on these tiny random models: int8 ~44 dB, int4 ~22 dB; torchao's own tests
#: ask 35 dB of an int8 weight-only linear layer).
MIN_SQNR = {"int8": 35.0, "int4": 15.0}


@functools.cache
def _compressed(name: str):
    return compress_model(tiny_model("llama", **BODY), DECODERS[name], show_progress=False, calibration=None)


def compressed(name: str):
    """A compressed tiny Llama (compressed once per module: a copy each time)."""
    model = copy.deepcopy(_compressed(name))
    assert model.get_output_embeddings().embedding is model.get_input_embeddings()
    return model


def embedding_state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.get_input_embeddings().state_dict().items()}


def assert_embedding_untouched(model, before: dict[str, torch.Tensor]) -> None:
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, CompressedEmbedding)
    for module in embedding.modules():
        assert not isinstance(module, torch.nn.Linear), module
    for name, param in embedding.named_parameters():
        assert type(param) is torch.nn.Parameter, (name, type(param))  # not a torchao tensor subclass
    state = embedding.state_dict()
    assert state.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(state[name], tensor), name


def quantised_body(model) -> str:
    return type(model.model.layers[0].self_attn.q_proj.weight).__name__


@pytest.mark.parametrize("decoder", DECODERS)
def test_quantize_leaves_the_decoder_and_codes_alone(decoder, input_ids):
    model = compressed(decoder)
    expected_decoder = Int8Linear if decoder == "transform_coding" else DecoderLinear
    assert any(isinstance(m, expected_decoder) for m in model.get_input_embeddings().decoder.modules())
    before = embedding_state(model)
    with torch.no_grad():
        reference = model(input_ids=input_ids).logits
    quantize_(model, Int8WeightOnlyConfig())  # the default filter: every nn.Linear
    assert quantised_body(model) == "Int8Tensor"
    assert_embedding_untouched(model, before)
    with torch.no_grad():  # the tied head still computes in code space from the decoder's weight
        logits = model(input_ids=input_ids).logits
    assert compute_error(reference, logits) > MIN_SQNR["int8"]


def test_torchao_config_leaves_codes_alone_even_with_the_embeddings_included(tmp_path, input_ids):
    model = compressed("svd")
    before = embedding_state(model)
    model.save_pretrained(tmp_path / "compressed")
    config = TorchAoConfig(Int8WeightOnlyConfig(), include_input_output_embeddings=True)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "compressed", quantization_config=config)
    assert quantised_body(loaded) == "Int8Tensor"
    assert_embedding_untouched(loaded, before)


RELOAD = """
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

mode, manifest = sys.argv[1], json.loads(open(sys.argv[2]).read())
if mode == "import":
    import compressed_embeddings  # noqa: F401
results = []
for entry in manifest:
    reference = load_file(entry["reference"])
    model = AutoModelForCausalLM.from_pretrained(entry["path"], trust_remote_code=mode == "remote").eval()
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits
    embedding = model.get_input_embeddings()
    results.append({
        "name": entry["name"],
        "class_module": type(model).__module__,
        "body": type(model.model.layers[0].self_attn.q_proj.weight).__name__,
        "embedding": type(embedding).__name__,
        "embedding_parameters": sorted({type(p).__name__ for p in embedding.parameters()}),
        "head_shares_embedding": getattr(model.get_output_embeddings(), "embedding", None) is embedding,
        "max_abs_diff": float((logits - reference["logits"]).abs().max()),
    })
print("RESULTS=" + json.dumps(results))
print("PACKAGE_IMPORTED=" + json.dumps("compressed_embeddings" in sys.modules))
"""


@pytest.fixture(scope="module")
def quantised_checkpoints(tmp_path_factory):
    """Compressed tiny Llamas (two decoders) loaded with `TorchAoConfig` (int8 and int4) and saved again, with the
    logits of the quantised model before saving."""
    root = tmp_path_factory.mktemp("quantised")
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    manifest = []
    for decoder in ("transform_coding", "svd"):
        model = compressed(decoder)
        before = embedding_state(model)
        with torch.no_grad():
            unquantised = model(input_ids=ids).logits
        model.save_pretrained(root / decoder)
        for name, make_config in QUANTISERS.items():
            quantised = AutoModelForCausalLM.from_pretrained(
                root / decoder, quantization_config=TorchAoConfig(make_config())
            ).eval()
            assert quantised_body(quantised) == ("Int8Tensor" if name == "int8" else "IntxUnpackedToInt8Tensor")
            assert_embedding_untouched(quantised, before)
            with torch.no_grad():
                logits = quantised(input_ids=ids).logits
            assert compute_error(unquantised, logits) > MIN_SQNR[name], (decoder, name)
            path = root / f"{decoder}-{name}"
            quantised.save_pretrained(path)
            save_file({"input_ids": ids, "logits": logits}, str(root / f"{decoder}-{name}.safetensors"))
            entry = {"name": f"{decoder}-{name}", "path": str(path)}
            manifest.append({**entry, "reference": str(root / f"{decoder}-{name}.safetensors")})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json", manifest


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_a_quantised_body_saves_and_reloads_by_both_paths(quantised_checkpoints, mode):
    manifest_path, manifest = quantised_checkpoints
    output = run_python(RELOAD, mode, str(manifest_path)).stdout
    results = json.loads(next(line for line in output.splitlines() if line.startswith("RESULTS="))[8:])
    assert json.loads(next(line for line in output.splitlines() if line.startswith("PACKAGE_IMPORTED="))[17:]) == (
        mode == "import"
    )
    assert [row["name"] for row in results] == [entry["name"] for entry in manifest]
    for row in results:
        assert row["body"] == ("Int8Tensor" if row["name"].endswith("int8") else "IntxUnpackedToInt8Tensor"), row
        assert row["embedding"] == "CompressedEmbedding" and row["embedding_parameters"] == ["Parameter"], row
        assert row["head_shares_embedding"], row
        assert row["class_module"].startswith("transformers_modules." if mode == "remote" else "compressed_"), row
        assert row["max_abs_diff"] <= 1e-6, row  # the same stored integers and scales: the same logits


OLD_CHECKPOINT = """
import json, sys
import torch
from safetensors.torch import load_file
from torchao.quantization import Int8WeightOnlyConfig
from torchao.quantization.utils import compute_error
from transformers import AutoModelForCausalLM, TorchAoConfig

mode, path = sys.argv[1], sys.argv[2]
if mode == "import":
    import compressed_embeddings  # noqa: F401
reference = load_file(path + "/reference.safetensors")
results = {}
for name, skip in (("default", None), ("named", ["model.embed_tokens", "lm_head"])):
    config = TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=skip)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, quantization_config=config).eval()
    row = {"decoder": type(model.get_input_embeddings().decoder.weight).__name__}
    row["body"] = type(model.model.layers[0].self_attn.q_proj.weight).__name__
    try:
        with torch.no_grad():
            row["sqnr"] = float(compute_error(reference["logits"], model(input_ids=reference["input_ids"]).logits))
    except NotImplementedError as error:
        row["error"] = str(error)[:200]
    results[name] = row
print("RESULTS=" + json.dumps(results))
"""


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_a_checkpoint_of_an_earlier_release(mode):
    """Format-1 checkpoints carry a layer.py whose decoder is an `nn.Linear`: loaded with the package imported, the
    package's layer applies (the quantiser leaves it alone); loaded as their own remote code, the quantiser takes the
    decoder unless the embedding is named in `modules_to_not_convert` (the recipe of the guide)."""
    fixture = REPO / "tests" / "fixtures" / "format_v1" / "llama-svd"
    output = run_python(OLD_CHECKPOINT, mode, str(fixture)).stdout
    results = json.loads(next(line for line in output.splitlines() if line.startswith("RESULTS="))[8:])
    assert results["named"]["decoder"] == "Parameter" and results["named"]["body"] == "Int8Tensor"
    assert results["named"]["sqnr"] > MIN_SQNR["int8"]
    if mode == "import":
        assert results["default"]["decoder"] == "Parameter" and results["default"]["sqnr"] > MIN_SQNR["int8"]
    else:  # the old nn.Linear decoder quantised: the tied head's code-space product refuses it
        assert results["default"]["decoder"] == "Int8Tensor" and "aten.mm" in results["default"]["error"]


def test_the_benchmark_counts_each_part_of_a_saved_checkpoint(quantised_checkpoints):
    """benchmarks/quantised_bodies.py's byte accounting, on the tiny saved checkpoints: the embedding's bytes are the
    layer's stored bytes, the parts add up to the tensors of the file, and packed int4 halves the int4 values only."""
    spec = importlib.util.spec_from_file_location("quantised_bodies", REPO / "benchmarks" / "quantised_bodies.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    manifest_path, manifest = quantised_checkpoints
    stored = {
        decoder: _compressed(decoder).get_input_embeddings().stored_bytes() for decoder in ("transform_coding", "svd")
    }
    for entry in manifest:
        tensors = benchmark.safetensors_bytes(Path(entry["path"]) / "model.safetensors")
        parts = benchmark.component_bytes(tensors)
        decoder = entry["name"].rsplit("-", 1)[0]
        assert parts["embedding"] == stored[decoder], entry["name"]
        assert parts["total"] == sum(size for _, size in tensors.values())
        values = sum(size for name, (dtype, size) in tensors.items() if name.endswith("_qdata") and dtype == "I8")
        assert values > 0 and parts["body_linear_packed_int4"] == parts["body_linear"] - values // 2
