"""The quality benchmark's byte accounting and rounding (benchmarks/quality.py), on tiny tensors and models."""

import importlib.util
from pathlib import Path

import torch
from conftest import tiny_model
from safetensors.torch import save_file

from compressed_embeddings import CompressedEmbeddingConfig, compress_model

_spec = importlib.util.spec_from_file_location(
    "quality_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
)
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)


def test_int8_code_dim_spends_at_most_the_byte_budget_and_the_count_is_the_serialised_size(tmp_path):
    model = tiny_model("llama", "LlamaForCausalLM", vocab_size=512)
    vocab, hidden = model.get_input_embeddings().weight.shape
    for ratio in (5.0, 10.0):
        k = quality.int8_code_dim(vocab, hidden, ratio)
        compressed = compress_model(
            tiny_model("llama", "LlamaForCausalLM", vocab_size=512),
            CompressedEmbeddingConfig(method="svd", code_dim=k, codes_dtype="int8"),
            show_progress=False,
        )
        stored = compressed.compression_report.stored_bytes
        assert stored <= 4 * vocab * hidden / ratio  # within budget
        # One more code column would overshoot: k is the largest width that fits.
        assert stored + vocab + 4 * hidden > 4 * vocab * hidden / ratio
        # The count is what the tensors take on disk (safetensors adds only its header).
        layer = compressed.get_input_embeddings()
        path = tmp_path / f"layer-{ratio}.safetensors"
        save_file({name: t.contiguous() for name, t in layer.state_dict().items()}, str(path))
        assert stored <= path.stat().st_size <= stored + 1024


def test_round_groups_is_exact_on_representable_values_and_bounded_otherwise():
    torch.manual_seed(0)
    levels = torch.randint(-7, 8, (16, 64)).float()
    levels[:, 0] = 7  # every group of 32 has absmax 7 -> scale 1
    levels[:, 32] = -7
    assert torch.equal(quality.round_groups(levels, 4, 32), levels)
    matrix = torch.randn(64, 96)
    rounded = quality.round_groups(matrix, 3, 32)
    scale = matrix.reshape(-1, 32).abs().amax(dim=1, keepdim=True) / 3
    assert ((rounded - matrix).reshape(-1, 32).abs() <= scale / 2 * 1.01).all()
    assert rounded.reshape(-1, 32).unique(dim=None).numel() <= 7 * 64 * 96 // 32
