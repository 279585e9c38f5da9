"""Shared fixtures: tiny random models of every tested family, built from configs (offline, milliseconds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

_DECODER = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
_ENCODER = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    pad_token_id=0,
)

#: family -> (config class name, config kwargs, class to compress, Auto classes the family has)
TINY_FAMILIES = {
    "bert": (
        "BertConfig",
        _ENCODER,
        "BertForMaskedLM",
        [
            "AutoModel",
            "AutoModelForMaskedLM",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering",
        ],
    ),
    "roberta": (
        "RobertaConfig",
        {**_ENCODER, "pad_token_id": 1},
        "RobertaForMaskedLM",
        [
            "AutoModel",
            "AutoModelForMaskedLM",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering",
        ],
    ),
    "distilbert": (
        "DistilBertConfig",
        dict(vocab_size=99, dim=32, hidden_dim=37, n_layers=2, n_heads=4, max_position_embeddings=64, pad_token_id=0),
        "DistilBertForMaskedLM",
        [
            "AutoModel",
            "AutoModelForMaskedLM",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering",
        ],
    ),
    "gpt2": (
        "GPT2Config",
        dict(
            vocab_size=99,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "GPT2LMHeadModel",
        [
            "AutoModel",
            "AutoModelForCausalLM",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering",
        ],
    ),
    "llama": (
        "LlamaConfig",
        {**_DECODER, "tie_word_embeddings": True},
        "LlamaForCausalLM",
        [
            "AutoModel",
            "AutoModelForCausalLM",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering",
        ],
    ),
    "qwen2": (
        "Qwen2Config",
        {**_DECODER, "tie_word_embeddings": False},
        "Qwen2ForCausalLM",
        [
            "AutoModel",
            "AutoModelForCausalLM",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering",
        ],
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        {**_DECODER, "head_dim": 8, "sliding_window": 16, "tie_word_embeddings": True},
        "Gemma3ForCausalLM",
        ["AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"],
    ),
    # Not in DEFAULT_FAMILIES and never named in the package: proves the mechanism is generic.
    "phi3": (
        "Phi3Config",
        {**_DECODER, "tie_word_embeddings": True},
        "Phi3ForCausalLM",
        ["AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModelForTokenClassification"],
    ),
}


def tiny_config(family: str, **overrides):
    config_name, kwargs, _, _ = TINY_FAMILIES[family]
    return getattr(transformers, config_name)(**{**kwargs, **overrides})


def tiny_model(family: str, class_name: str | None = None, seed: int = 0, **overrides):
    """A tiny random model of `family` (its masked-LM / causal-LM class unless `class_name` is given), in eval mode."""
    _, _, default_class, _ = TINY_FAMILIES[family]
    torch.manual_seed(seed)
    model = getattr(transformers, class_name or default_class)(tiny_config(family, **overrides))
    return model.eval()


def run_python(code: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python process (same interpreter), failing the test with its output on error."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"subprocess failed ({result.returncode}):\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result


def load_in_fresh_process(manifest_path, mode: str) -> list[dict]:
    """Load the checkpoints a manifest lists in a fresh process (`tests/load_checkpoints.py`): `mode="import"`
    imports the package first, `"remote"` relies on `trust_remote_code=True`. Returns its results."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "load_checkpoints.py"), mode, str(manifest_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS="))
    return json.loads(line[len("RESULTS=") :])


@pytest.fixture
def input_ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(1, 99, (2, 9), generator=generator)


@pytest.fixture(autouse=True)
def _small_calibration(request, monkeypatch):
    """Tiny models calibrate on 1,024 tokens (generic or self-generated) instead of 16,384; `real` tests keep the
    library's default."""
    if request.node.get_closest_marker("real") is None:
        import compressed_embeddings.calibration as calibration

        monkeypatch.setattr(calibration, "CALIBRATION_TOKENS", 1024)


def flip_bit(path, key: str) -> int:
    """Flip the lowest bit of one byte in the middle of tensor `key`'s data in the safetensors file `path` (the first
    byte of an element, so a float changes by one unit in the last place; never into an int8 -128), as a bad disk or
    transfer would, the header untouched. Returns the file offset of the byte."""
    data = bytearray(Path(path).read_bytes())
    size = int.from_bytes(data[:8], "little")
    entry = json.loads(data[8 : 8 + size])[key]
    width = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1}[entry["dtype"]]
    start, end = (8 + size + offset for offset in entry["data_offsets"])
    position = start + (end - start) // 2 // width * width
    while entry["dtype"] == "I8" and data[position] ^ 1 == 0x80:
        position += 1
    data[position] ^= 1
    Path(path).write_bytes(data)
    return position
