"""The bad-input matrix: every way a user can point the library at the wrong thing, with the exact error type and a
message that names the problem and the fix. Nothing half-written, nothing loaded at random.

One list, `CASES`, parametrizes the test; `pytest tests/test_bad_inputs.py -q` reports one test per case (see
docs/reliability.md). Config validation field by field is in test_config.py, `resize_token_embeddings(0)` in
test_training.py, an existing `--output` in test_cli.py: not repeated here.
"""

import contextlib
import io
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import flip_bit, tiny_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    BertForMaskedLM,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
)

from compressed_embeddings import (
    CheckpointMismatchError,
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    CorruptCheckpointError,
    DamagedCheckpointError,
    NotACompressedCheckpointError,
    UnsafeCheckpointError,
    UnsupportedModelError,
    compress_model,
    compressed_model_class,
)
from compressed_embeddings import cli as cli_module
from compressed_embeddings.version import FORMAT_VERSION

CompressedLlama = compressed_model_class(LlamaForCausalLM)
SVD8 = dict(method="svd", code_dim=8)


class CliExit(Exception):
    """A CLI run that exited non-zero: `code` and what it printed to stderr (the CLI's "error type")."""

    def __init__(self, code: int, stderr: str):
        super().__init__(stderr)
        self.code = code


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A stock llama folder, a stock bert folder and compressed llama checkpoints (float codes, int8 codes, packed
    codes with an int8 decoder), written once."""
    root = tmp_path_factory.mktemp("sources")
    tiny_model("llama").save_pretrained(root / "stock")
    tiny_model("bert").save_pretrained(root / "stock_bert")
    for name, config in (
        ("compressed", CompressedEmbeddingConfig(**SVD8)),
        ("int8", CompressedEmbeddingConfig(**SVD8, codes_dtype="int8")),
        ("packed", CompressedEmbeddingConfig(compression_ratio=4, kl_steps=2)),
    ):
        model = tiny_model("llama", vocab_size=1024 if name == "packed" else 99)
        compress_model(model, config, calibration=None, show_progress=False).save_pretrained(root / name)
    return root


@dataclass
class Context:
    sources: Path
    tmp: Path

    def copy(self, name: str = "compressed") -> Path:
        """A fresh copy of a source folder, to damage."""
        target = self.tmp / f"{name}-{len(list(self.tmp.iterdir()))}"
        shutil.copytree(self.sources / name, target)
        return target

    def edit_block(self, edit: Callable[[dict], object]) -> Path:
        """A copy of the compressed checkpoint whose config.json `compressed_embedding` block is edited."""
        folder = self.copy()
        config = json.loads((folder / "config.json").read_text())
        result = edit(config["compressed_embedding"])
        if result is not None:  # the edit returns a whole new block
            config["compressed_embedding"] = result
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    def edit_weights(self, edit: Callable[[dict], None], name: str = "compressed") -> Path:
        """A copy of a compressed checkpoint whose model.safetensors tensors are edited (config.json untouched)."""
        folder = self.copy(name)
        tensors = load_file(folder / "model.safetensors")
        edit(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors", {"format": "pt"})
        return folder

    def damage_file(self, damage: Callable[[bytes], bytes], name: str = "compressed") -> Path:
        """A copy of a folder whose model.safetensors bytes are damaged."""
        folder = self.copy(name)
        path = folder / "model.safetensors"
        path.write_bytes(damage(path.read_bytes()))
        return folder

    def flip_bit(self, key: str, name: str = "compressed") -> Path:
        """A copy of a compressed checkpoint with one bit of tensor `key` flipped in model.safetensors."""
        folder = self.copy(name)
        flip_bit(folder / "model.safetensors", key)
        return folder

    def cli(self, *args: str) -> None:
        """Run the CLI in this process (as `python -m compressed_embeddings`, minus the start-up time)."""
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = cli_module.main(list(args))
        if code != 0:
            raise CliExit(code, stderr.getvalue())

    def out(self) -> str:
        return str(self.tmp / "out")


# ---------------------------------------------------------------------------------------------- odd models
class _NoEmbeddingConfig(PreTrainedConfig):
    model_type = "no_embedding_test"


class _NoEmbeddingModel(PreTrainedModel):
    """A PreTrainedModel with no token embedding (like a vision or audio model); `get_input_embeddings` is inherited
    and finds nothing."""

    config_class = _NoEmbeddingConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(4, 4)
        self.post_init()


class _NoneEmbeddingModel(_NoEmbeddingModel):
    def get_input_embeddings(self):
        return None


class _RaisingEmbeddingModel(_NoEmbeddingModel):
    def get_input_embeddings(self):
        raise NotImplementedError


def _with_bad_rows(value: float):
    model = tiny_model("llama")
    with torch.no_grad():
        model.get_input_embeddings().weight[[5, 17]] = value
    return model


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garble_header(data: bytes) -> bytes:
    return data[:10] + b"\xff" * 20 + data[30:]


def _bin_only(ctx: Context, name: str) -> Path:
    folder = ctx.copy(name)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def _no_weights(ctx: Context) -> Path:
    folder = ctx.copy()
    (folder / "model.safetensors").unlink()
    return folder


def _drop(key: str):
    def edit(block: dict) -> None:
        del block[key]

    return edit


def _set(**values):
    def edit(block: dict) -> None:
        block.update(values)

    return edit


def _shrink_codes(tensors: dict) -> None:
    tensors["model.embed_tokens.codes"] = tensors["model.embed_tokens.codes"][:90]


def _drop_codes(tensors: dict) -> None:
    del tensors["model.embed_tokens.codes"]


def _set_weight(key: str, index, value):
    """An edit of the weights setting `model.embed_tokens.<key>[index]` (`value` may be a function of the old one)."""

    def edit(tensors: dict) -> None:
        tensor = tensors[f"model.embed_tokens.{key}"]
        tensor[index] = value(tensor[index]) if callable(value) else value

    return edit


#: What a damaged checkpoint's error says besides what is wrong: the file and what to do.
DAMAGED = ("is damaged: .*model.safetensors, tensor", "Download it again", "re-create the checkpoint")


# ---------------------------------------------------------------------------------------------- the matrix
@dataclass
class Case:
    name: str
    action: Callable[[Context], object]
    error: type | int  # the exact exception type, or the CLI's exit status
    patterns: tuple[str, ...]  # regexes the message must contain: the problem and the fix


CASES = [
    # -- a path that does not exist
    Case(
        "from_pretrained: missing absolute path",
        lambda c: CompressedLlama.from_pretrained(c.tmp / "nope"),
        FileNotFoundError,
        ("nope: no such file or directory", "Pass the folder of a compressed checkpoint"),
    ),
    Case(
        "from_pretrained: missing relative path",
        lambda c: CompressedLlama.from_pretrained("./no/such/folder"),
        FileNotFoundError,
        ("no such file or directory", "Hub id"),
    ),
    Case(
        "AutoModel: missing path (transformers' own error)",
        lambda c: AutoModelForCausalLM.from_pretrained(str(c.tmp / "nope")),
        OSError,
        ("nope",),
    ),
    Case(
        "CLI: missing path",
        lambda c: c.cli("compress", str(c.tmp / "nope"), "--output", c.out()),
        2,
        ("no such file or directory", "Pass a local model folder or a Hub id"),
    ),
    Case(
        "CLI: folder that is not a model",
        lambda c: c.cli("compress", str(c.tmp), "--output", c.out()),
        2,
        ("Could not load a transformers config", "config.json"),
    ),
    # -- models without a token embedding
    Case(
        "compress_model: get_input_embeddings finds none",
        lambda c: compress_model(_NoEmbeddingModel(_NoEmbeddingConfig())),
        UnsupportedModelError,
        ("exposes no input embeddings", "Pass a text model"),
    ),
    Case(
        "compress_model: get_input_embeddings returns None",
        lambda c: compress_model(_NoneEmbeddingModel(_NoEmbeddingConfig())),
        UnsupportedModelError,
        ("exposes no input embeddings", "Pass a text model"),
    ),
    Case(
        "compress_model: get_input_embeddings raises NotImplementedError",
        lambda c: compress_model(_RaisingEmbeddingModel(_NoEmbeddingConfig())),
        UnsupportedModelError,
        ("exposes no input embeddings", "Pass a text model"),
    ),
    # -- sizes (through compress_model and the CLI; the config alone is covered by test_config.py)
    Case(
        "compress_model: code_dim = 0",
        lambda c: compress_model(tiny_model("llama"), CompressedEmbeddingConfig(method="autoencoder", code_dim=0)),
        CompressedEmbeddingConfigError,
        ("code_dim is invalid: got 0", "expected a positive integer"),
    ),
    Case(
        "compress_model: code_dim = hidden size",
        lambda c: compress_model(
            tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=32), show_progress=False
        ),
        CompressedEmbeddingConfigError,
        (r"code_dim is invalid: got 32", r"\[1, 32\)", "smaller than the hidden size"),
    ),
    Case(
        "CLI: --code-dim -3",
        lambda c: c.cli(
            "compress", str(c.sources / "stock"), "--method", "svd", "--code-dim", "-3", "--output", c.out()
        ),
        2,
        ("code_dim is invalid: got -3", "positive integer"),
    ),
    Case(
        "CLI: --code-dim above the hidden size",
        lambda c: c.cli(
            "compress", str(c.sources / "stock"), "--method", "svd", "--code-dim", "40", "--quiet", "--output", c.out()
        ),
        2,
        ("code_dim is invalid: got 40", "smaller than the hidden size"),
    ),
    Case(
        "compress_model: ratio = 1",
        lambda c: compress_model(tiny_model("llama"), CompressedEmbeddingConfig(compression_ratio=1)),
        CompressedEmbeddingConfigError,
        ("compression_ratio is invalid: got 1", "a number > 1"),
    ),
    Case(
        "CLI: --ratio 0.5",
        lambda c: c.cli("compress", str(c.sources / "stock"), "--ratio", "0.5", "--output", c.out()),
        2,
        ("compression_ratio is invalid: got 0.5", "a number > 1"),
    ),
    Case(
        "compress_model: ratio needing k < 1",
        lambda c: compress_model(
            tiny_model("llama"), CompressedEmbeddingConfig(method="autoencoder", compression_ratio=1000)
        ),
        CompressedEmbeddingConfigError,
        ("got 1000", r"highest ratio reachable is \d+\.\d\d", "Ask for a smaller ratio"),
    ),
    # -- unknown method
    Case(
        "compress_model: method 'pca'",
        lambda c: compress_model(tiny_model("llama"), CompressedEmbeddingConfig(method="pca")),
        CompressedEmbeddingConfigError,
        ("method is invalid: got 'pca'", "one of 'autoencoder', 'svd'"),
    ),
    Case(
        "CLI: --method PCA",
        lambda c: c.cli("compress", str(c.sources / "stock"), "--method", "PCA", "--output", c.out()),
        2,
        ("method is invalid: got 'PCA'", "one of 'autoencoder', 'svd'"),
    ),
    # -- non-finite embeddings
    Case(
        "compress_model: NaN rows",
        lambda c: compress_model(_with_bad_rows(float("nan")), CompressedEmbeddingConfig(**SVD8)),
        ValueError,
        (r"2 row\(s\) with NaN or Inf values \(token ids \[5, 17\]\)", "Fix or re-initialise those rows"),
    ),
    Case(
        "compress_model: Inf rows",
        lambda c: compress_model(_with_bad_rows(float("-inf")), CompressedEmbeddingConfig(**SVD8)),
        ValueError,
        (r"2 row\(s\) with NaN or Inf values \(token ids \[5, 17\]\)", "Fix or re-initialise those rows"),
    ),
    # -- damaged safetensors files
    Case(
        "from_pretrained: truncated safetensors",
        lambda c: CompressedLlama.from_pretrained(c.damage_file(_truncate)),
        CorruptCheckpointError,
        ("Cannot read the weights", "corrupted or truncated", "download it again", "re-create the checkpoint"),
    ),
    Case(
        "from_pretrained: corrupted safetensors header",
        lambda c: CompressedLlama.from_pretrained(c.damage_file(_garble_header)),
        CorruptCheckpointError,
        ("Cannot read the weights", "corrupted or truncated", "download it again"),
    ),
    Case(
        "AutoModel: empty safetensors file",
        lambda c: AutoModelForCausalLM.from_pretrained(c.damage_file(lambda data: b"")),
        CorruptCheckpointError,
        ("header too small", "corrupted or truncated"),
    ),
    Case(
        "from_pretrained: no weights file at all (transformers' own error)",
        lambda c: CompressedLlama.from_pretrained(_no_weights(c)),
        OSError,
        ("no file named model.safetensors found",),
    ),
    Case(
        "CLI: truncated safetensors in the source model",
        lambda c: c.cli("compress", str(c.damage_file(_truncate, "stock")), "--output", c.out()),
        2,
        ("corrupted or truncated", "download or copy it again"),
    ),
    # -- the config.json block
    Case(
        "config.json block lacks code_dim",
        lambda c: CompressedLlama.from_pretrained(c.edit_block(_drop("code_dim"))),
        CompressedEmbeddingConfigError,
        (r"lacks \['code_dim'\]", "re-create it with `compressed-embeddings compress`"),
    ),
    Case(
        "config.json block lacks num_embeddings (AutoModel)",
        lambda c: AutoModelForCausalLM.from_pretrained(c.edit_block(_drop("num_embeddings"))),
        CompressedEmbeddingConfigError,
        (r"lacks \['num_embeddings'\]", "re-create it"),
    ),
    Case(
        "config.json block: code_dim is a string",
        lambda c: CompressedLlama.from_pretrained(c.edit_block(_set(code_dim="8"))),
        CompressedEmbeddingConfigError,
        ("code_dim is invalid: got '8'", "positive integer", "fix it in config.json"),
    ),
    Case(
        "config.json block: freeze_codes is a string",
        lambda c: AutoModelForCausalLM.from_pretrained(c.edit_block(_set(freeze_codes="yes"))),
        CompressedEmbeddingConfigError,
        ("freeze_codes is invalid: got 'yes'", "True or False", "fix it in config.json"),
    ),
    Case(
        "config.json block is a list",
        lambda c: CompressedLlama.from_pretrained(c.edit_block(lambda block: [block])),
        CompressedEmbeddingConfigError,
        ("block must be a JSON object, got list",),
    ),
    Case(
        "config.json block from a newer format_version",
        lambda c: AutoModelForCausalLM.from_pretrained(
            c.edit_block(_set(format_version=FORMAT_VERSION + 1, method="quantized", library_version="9.0"))
        ),
        CompressedEmbeddingConfigError,
        (f"format_version {FORMAT_VERSION + 1}", "written by compressed_embeddings 9.0", "Upgrade with `pip install"),
    ),
    # -- weights that disagree with the config
    Case(
        "codes have fewer rows than config.json's num_embeddings",
        lambda c: CompressedLlama.from_pretrained(c.edit_weights(_shrink_codes)),
        CheckpointMismatchError,
        (r"inconsistent", r"codes: \(90, 8\) in the weights, \(99, 8\) expected", "re-create the checkpoint"),
    ),
    Case(
        "config.json's num_embeddings edited (ignore_mismatched_sizes=True)",
        lambda c: CompressedLlama.from_pretrained(c.edit_block(_set(num_embeddings=90)), ignore_mismatched_sizes=True),
        CheckpointMismatchError,
        (r"num_embeddings=90", r"\(99, 8\) in the weights, \(90, 8\) expected", "does not apply to it"),
    ),
    Case(
        "config.json's code_dim edited",
        lambda c: CompressedLlama.from_pretrained(c.edit_block(_set(code_dim=6))),
        CheckpointMismatchError,
        (r"code_dim=6", r"codes: \(99, 8\) in the weights, \(99, 6\) expected", "decoder.weight", "re-create"),
    ),
    Case(
        "config.json's code_dim edited (AutoModel, ignore_mismatched_sizes=True)",
        lambda c: AutoModelForCausalLM.from_pretrained(c.edit_block(_set(code_dim=4)), ignore_mismatched_sizes=True),
        CheckpointMismatchError,
        (r"\(99, 8\) in the weights, \(99, 4\) expected", "random values", "re-create the checkpoint"),
    ),
    Case(
        "codes missing from the weights",
        lambda c: CompressedLlama.from_pretrained(c.edit_weights(_drop_codes)),
        CheckpointMismatchError,
        ("model.embed_tokens.codes: missing", "random values", "re-create the checkpoint"),
    ),
    # -- stored values that no save writes, and bytes other than those saved (their SHA-256 in config.json)
    Case(
        "packed codes: a tier id out of range in row_tiers",
        lambda c: CompressedLlama.from_pretrained(c.edit_weights(_set_weight("packed.row_tiers", 17, 200), "packed")),
        DamagedCheckpointError,
        (r"'model.embed_tokens.packed.row_tiers' gives row 17 tier 200; config.json has \d+ tiers", *DAMAGED),
    ),
    Case(
        "packed codes: rows per tier other than tier_sizes",
        lambda c: CompressedLlama.from_pretrained(
            c.edit_weights(_set_weight("packed.row_tiers", 17, lambda tier: 1 - tier.clamp(max=1)), "packed")
        ),
        DamagedCheckpointError,
        (r"row_tiers' puts \[.*\] rows in the tiers, config.json \[", *DAMAGED),
    ),
    Case(
        "packed codes: a NaN in a codebook (AutoModel)",
        lambda c: AutoModelForCausalLM.from_pretrained(
            c.edit_weights(_set_weight("packed.codebooks.0", 1, float("nan")), "packed")
        ),
        DamagedCheckpointError,
        (
            r"'model.embed_tokens.packed.codebooks.0' holds 1 NaN or infinite value\(s\) \(the first at \(1,\)\)",
            *DAMAGED,
        ),
    ),
    Case(
        "packed codes: one flipped bit in the planes (checksum)",
        lambda c: CompressedLlama.from_pretrained(c.flip_bit("model.embed_tokens.packed.planes.0", "packed")),
        DamagedCheckpointError,
        ("'model.embed_tokens.packed.planes.0' holds other bytes than were saved: its SHA-256", *DAMAGED),
    ),
    Case(
        "float codes: an infinite value",
        lambda c: CompressedLlama.from_pretrained(c.edit_weights(_set_weight("codes", (5, 3), float("inf")))),
        DamagedCheckpointError,
        (r"'model.embed_tokens.codes' holds 1 NaN or infinite value\(s\) \(the first at \(5, 3\)\)", *DAMAGED),
    ),
    Case(
        "float codes: one flipped bit (checksum)",
        lambda c: AutoModelForCausalLM.from_pretrained(c.flip_bit("model.embed_tokens.codes")),
        DamagedCheckpointError,
        ("'model.embed_tokens.codes' holds other bytes than were saved", *DAMAGED),
    ),
    Case(
        "int8 codes: a scale <= 0 (AutoModel)",
        lambda c: AutoModelForCausalLM.from_pretrained(c.edit_weights(_set_weight("code_scales", 7, 0.0), "int8")),
        DamagedCheckpointError,
        (r"'model.embed_tokens.code_scales' holds 1 scale\(s\) <= 0", *DAMAGED),
    ),
    Case(
        "int8 decoder: a NaN in its scales",
        lambda c: CompressedLlama.from_pretrained(
            c.edit_weights(_set_weight("decoder.scales", 2, float("nan")), "packed")
        ),
        DamagedCheckpointError,
        (r"'model.embed_tokens.decoder.scales' holds 1 NaN", *DAMAGED),
    ),
    # -- checkpoint and class of different kinds
    Case(
        "compressed llama loaded as compressed BERT",
        lambda c: compressed_model_class(BertForMaskedLM).from_pretrained(c.sources / "compressed"),
        CheckpointMismatchError,
        ("a 'compressed_llama' checkpoint", "CompressedBertForMaskedLM loads 'compressed_bert'", "AutoModel"),
    ),
    Case(
        "stock BERT loaded as compressed BERT",
        lambda c: compressed_model_class(BertForMaskedLM).from_pretrained(c.sources / "stock_bert"),
        NotACompressedCheckpointError,
        ("model_type 'bert'", "stock, uncompressed", "compressed-embeddings compress"),
    ),
    Case(
        "stock BERT loaded as compressed llama",
        lambda c: CompressedLlama.from_pretrained(c.sources / "stock_bert"),
        NotACompressedCheckpointError,
        ("stock, uncompressed", "Compress it first"),
    ),
    Case(
        "compress_model on a compressed model",
        lambda c: compress_model(CompressedLlama.from_pretrained(c.sources / "compressed")),
        UnsupportedModelError,
        ("already compressed", "decompress_model"),
    ),
    # -- pickle
    Case(
        "from_pretrained: pickle weights only",
        lambda c: CompressedLlama.from_pretrained(_bin_only(c, "compressed")),
        UnsafeCheckpointError,
        ("only pickle files", "can run arbitrary code", "use_safetensors=False"),
    ),
    Case(
        "AutoModel: pickle weights only",
        lambda c: AutoModelForCausalLM.from_pretrained(_bin_only(c, "compressed")),
        UnsafeCheckpointError,
        ("only pickle files", "use_safetensors=False"),
    ),
    Case(
        "CLI: source model with pickle weights only",
        lambda c: c.cli("compress", str(_bin_only(c, "stock")), "--output", c.out()),
        2,
        ("only pickle files", "can run arbitrary code", "--allow-pickle"),
    ),
]


def test_the_matrix_is_large():
    assert len(CASES) >= 20, len(CASES)
    assert len({case.name for case in CASES}) == len(CASES), "case names are unique"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_a_clear_error(case, sources, tmp_path):
    ctx = Context(sources, tmp_path)
    expected = CliExit if isinstance(case.error, int) else case.error
    with pytest.raises(Exception) as info:
        case.action(ctx)
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    if isinstance(case.error, int):
        assert info.value.code == case.error, str(info.value)
        assert "Traceback" not in str(info.value)
    message = str(info.value)
    for pattern in case.patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    assert not (tmp_path / "out").exists(), "nothing is written on a bad input"
