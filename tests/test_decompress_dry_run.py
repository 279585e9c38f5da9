"""`compressed-embeddings decompress` (a stock checkpoint from a compressed one, for runtimes that only know stock
models) and `compressed-embeddings compress --dry-run` (the sizes a run would produce, from the config alone)."""

import json
import shutil
import struct

import pytest
import torch
import transformers
from conftest import run_python, tiny_model
from safetensors.torch import load_file, save_file
from tiny_tokenizers import bert_tokenizer, gpt2_tokenizer

from compressed_embeddings import CompressedEmbeddingConfig, cli, compress_model
from compressed_embeddings.cards import CARD_MARKER
from compressed_embeddings.packed_codes import MAX_BITS

METHODS = ("transform_coding", "autoencoder", "svd")
#: family -> (stock class, tokenizer, stock model_type); Llama's head is tied, BERT's masked-LM decoder too (+ bias).
FAMILIES = {
    "llama": ("LlamaForCausalLM", gpt2_tokenizer, "llama"),
    "bert": ("BertForMaskedLM", bert_tokenizer, "bert"),
}
CASES = [(family, method) for family in FAMILIES for method in METHODS]


def _config(method: str) -> CompressedEmbeddingConfig:
    extra = {"max_steps": 20} if method == "autoencoder" else {}
    return CompressedEmbeddingConfig(method=method, compression_ratio=4, **extra)


# ------------------------------------------------------------------------------------------------ decompress
@pytest.fixture(scope="module")
def decompressed(tmp_path_factory):
    """Per case: a compressed tiny checkpoint saved with its tokenizer, its logits, and the `decompress` output."""
    root = tmp_path_factory.mktemp("decompress")
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    cases = {}
    for family, method in CASES:
        _, tokenizer, _ = FAMILIES[family]
        model = compress_model(tiny_model(family), _config(method), show_progress=False, calibration=None)
        # A tied head over packed codes runs from their runtime layout, by default with int8/int4 kernels on bf16
        # activations (`packed_runtime`); "exact" computes the same product in the activations' dtype, as the stock
        # model multiplies by the decoded matrix.
        model.get_input_embeddings().runtime_mode = "exact"
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        source, output = root / f"{family}-{method}", root / f"{family}-{method}-stock"
        model.save_pretrained(source)
        tokenizer().save_pretrained(source)
        assert cli.main(["decompress", str(source), "--output", str(output)]) == 0
        cases[family, method] = {"source": source, "output": output, "logits": logits}
    return ids, cases


@pytest.mark.parametrize("family,method", CASES)
def test_decompress_writes_a_stock_checkpoint_with_the_same_logits(decompressed, family, method):
    ids, cases = decompressed
    case = cases[family, method]
    source, output = case["source"], case["output"]
    class_name, _, model_type = FAMILIES[family]
    assert CARD_MARKER in (source / "README.md").read_text()  # the source has a compressed card, code files
    assert list(source.glob("*.py"))

    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == model_type and config["architectures"] == [class_name]
    assert "auto_map" not in config and "compressed_embedding" not in config
    names = {path.name for path in output.iterdir()}
    assert not [name for name in names if name.endswith(".py")]
    assert "compression_report.json" not in names
    assert "README.md" not in names or CARD_MARKER not in (output / "README.md").read_text()
    assert {"model.safetensors", "tokenizer_config.json"} <= names
    assert ("generation_config.json" in names) == (family == "llama")
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"

    model = getattr(transformers, class_name).from_pretrained(output).eval()
    assert type(model.get_input_embeddings()) is torch.nn.Embedding
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # the head is re-tied
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, case["logits"], atol=1e-5, rtol=1e-5)


def test_decompressed_checkpoints_load_in_a_process_without_the_package(decompressed, tmp_path):
    ids, cases = decompressed
    manifest = [
        {"path": str(case["output"]), "auto": "AutoModelForCausalLM" if family == "llama" else "AutoModelForMaskedLM"}
        for (family, _), case in cases.items()
    ]
    save_file({"input_ids": ids}, tmp_path / "ids.safetensors")
    code = """
import json, sys
import torch, transformers
from safetensors.torch import load_file, save_file
manifest, folder = json.loads(sys.argv[1]), sys.argv[2]
ids = load_file(folder + "/ids.safetensors")["input_ids"]
logits = {}
for i, entry in enumerate(manifest):
    model = getattr(transformers, entry["auto"]).from_pretrained(entry["path"]).eval()
    assert type(model).__module__.startswith("transformers."), type(model)
    with torch.no_grad():
        logits[str(i)] = model(input_ids=ids).logits.contiguous()
save_file(logits, folder + "/logits.safetensors")
assert not [name for name in sys.modules if name.startswith("compressed_embeddings")], "the package was imported"
"""
    run_python(code, json.dumps(manifest), str(tmp_path))
    logits = load_file(tmp_path / "logits.safetensors")
    for i, case in enumerate(cases.values()):
        torch.testing.assert_close(logits[str(i)], case["logits"], atol=1e-5, rtol=1e-5)


def test_decompress_prints_sizes_and_refuses_what_it_cannot_do(decompressed, tmp_path, capsys):
    _, cases = decompressed
    source = cases["llama", "svd"]["source"]
    output = tmp_path / "stock"
    assert cli.main(["decompress", str(source), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "bytes stored compressed -> 12,672 bytes decoded" in printed  # 99 x 32 fp32
    assert "Checkpoint folder:" in printed and "stock LlamaForCausalLM (model_type llama)" in printed

    assert cli.main(["decompress", str(source), "--output", str(output)]) == cli.EXIT_USAGE  # exists
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["decompress", str(output), "--output", str(tmp_path / "again")]) == cli.EXIT_USAGE  # stock
    assert "not a compressed checkpoint" in capsys.readouterr().err and not (tmp_path / "again").exists()
    assert cli.main(["decompress", str(source), "--output", str(source), "--overwrite"]) == cli.EXIT_USAGE
    assert "compressed checkpoint itself" in capsys.readouterr().err and (source / "modeling.py").exists()


# ------------------------------------------------------------------------------------------------ compress --dry-run
#: (family, method, ratio, vocabulary, dtype saved, extra arguments)
DRY_RUN_CASES = [
    ("llama", "transform_coding", "4", 512, torch.float32, []),  # tiers of 128, 128, 256 rows (self-generated text)
    ("llama", "transform_coding", "6", 512, torch.bfloat16, []),  # --dtype auto reads bf16 from config.json
    ("llama", "autoencoder", "4", 512, torch.float32, ["--max-steps", "5"]),
    ("llama", "svd", "4", 512, torch.float32, []),
    ("llama", "svd", "4", 512, torch.bfloat16, ["--input-only"]),  # the tied head untied: its matrix is kept
    ("bert", "transform_coding", "4", 512, torch.float32, []),  # one tier: random-token calibration
    ("bert", "transform_coding", "2", 2048, torch.float32, []),  # every column at 8 bits fits: exact
    ("bert", "autoencoder", "3", 512, torch.float32, ["--max-steps", "5"]),
    ("bert", "svd", "3", 512, torch.float32, []),
]


def _safetensors_data_bytes(path) -> int:
    """Bytes of the tensors in a safetensors file (its size less the 8-byte length and the JSON header)."""
    with open(path, "rb") as file:
        header = struct.unpack("<Q", file.read(8))[0]
    return path.stat().st_size - 8 - header


@pytest.mark.parametrize("family,method,ratio,vocab,dtype,extra", DRY_RUN_CASES)
def test_dry_run_sizes_match_the_real_run(tmp_path, capsys, family, method, ratio, vocab, dtype, extra):
    source = tmp_path / "source"
    tiny_model(family, vocab_size=vocab).to(dtype).save_pretrained(source)
    calibration = ["--calibration-text", "none", "--calibration-tokens", "256"] if method == "transform_coding" else []
    argv = ["compress", str(source), "--method", method, "--ratio", ratio, *calibration, "--quiet", *extra]

    output = tmp_path / "out"
    assert cli.main([*argv, "--output", str(output), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert not output.exists(), "the dry run wrote its output"
    args = cli.build_parser().parse_args([*argv, "--output", str(output)])
    sizes = cli.dry_run_sizes(str(source), cli._compression_config(args), calibration="none")
    assert f"{sizes.stored_bytes:,} bytes" in printed and f"{sizes.original_bytes:,} bytes" in printed
    assert f"{sizes.checkpoint_weight_bytes:,} bytes" in printed
    assert sizes.dtype == str(dtype).removeprefix("torch.")

    config_only = tmp_path / "config-only"  # no weights at all: the dry run reads the config only
    config_only.mkdir()
    shutil.copy(source / "config.json", config_only)
    assert cli.dry_run_sizes(str(config_only), cli._compression_config(args), calibration="none") == sizes

    assert cli.main([*argv, "--output", str(output)]) == 0
    capsys.readouterr()
    report = json.loads((output / "compression_report.json").read_text())
    assert report["original_bytes"] == sizes.original_bytes
    assert report["dtype"] == sizes.dtype and report["code_dim"] == sizes.code_dim
    real = report["stored_bytes"]
    if sizes.exact:
        assert real == sizes.stored_bytes
    else:  # the bits are allocated on the weights: at most the budget; short of it by less than one allocation step
        assert method == "transform_coding" and "at most" in printed
        step = max(report["config"]["tier_sizes"]) + 2 ** (MAX_BITS - 1) * dtype.itemsize
        assert sizes.stored_bytes - step < real <= sizes.stored_bytes <= sizes.budget_bytes
    weights = _safetensors_data_bytes(output / "model.safetensors")
    assert weights == sizes.checkpoint_weight_bytes - (sizes.stored_bytes - real)
    print(f"{family} {method} ratio {ratio} {dtype}: dry run {sizes.stored_bytes} ({sizes.exact=}), real {real}")


def test_dry_run_refuses_what_the_real_run_refuses(tmp_path, capsys):
    source = tmp_path / "source"
    tiny_model("llama").save_pretrained(source)  # 99 x 32: transform coding's decoder alone exceeds ratio 10
    assert cli.main(["compress", str(source), "--output", str(tmp_path / "o"), "--dry-run"]) == cli.EXIT_USAGE
    assert "out of reach" in capsys.readouterr().err
    compressed = tmp_path / "compressed"
    compress_model(tiny_model("llama"), _config("svd"), show_progress=False).save_pretrained(compressed)
    assert cli.main(["compress", str(compressed), "--output", str(tmp_path / "o"), "--dry-run"]) == cli.EXIT_USAGE
    assert "already compressed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
