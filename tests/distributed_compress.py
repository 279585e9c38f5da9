"""Compress a small random Llama with the autoencoder and save it on the main process.

Run as `python tests/distributed_compress.py OUTPUT` (one process) or under
`accelerate launch --multi_gpu --num_processes 2 tests/distributed_compress.py OUTPUT` (data parallel over gloo on a
CPU-only machine: `accelerate launch --cpu` starts several processes only through `mpirun`);
tests/test_distributed.py compares the two.
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import LlamaConfig, LlamaForCausalLM

from compressed_embeddings import CompressedEmbeddingConfig, compress_model

VOCAB, HIDDEN = 1000, 64
COMPRESSION = dict(method="autoencoder", code_dim=8, epochs=3, batch_size=50, learning_rate=1e-2, seed=3)


def build_model() -> LlamaForCausalLM:
    """The same random model in every process (a fixed seed), with a nearly rank-8 embedding as trained ones are
    nearly low-rank (so the compression has something to find)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.randn(VOCAB, 8) @ torch.randn(8, HIDDEN) * 0.02)
        model.get_input_embeddings().weight.add_(0.002 * torch.randn(VOCAB, HIDDEN))
    return model


def main(output: str) -> None:
    model = compress_model(build_model(), CompressedEmbeddingConfig(**COMPRESSION), show_progress=False)
    state = PartialState()  # the state the compression set up (MULTI_CPU under the launcher)
    model.save_pretrained(output, is_main_process=state.is_main_process)
    if state.is_main_process:
        report = model.compression_report.to_dict() | {"num_processes": state.num_processes}
        (Path(output) / "compression_report.json").write_text(json.dumps(report, indent=2))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
