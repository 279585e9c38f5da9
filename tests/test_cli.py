"""The `compressed-embeddings` command line, run in a subprocess as users run it."""

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from compressed_embeddings import CompressedEmbeddingConfig, cli, compress_model, configuration, methods
from compressed_embeddings.methods import MethodConfig, register_method, registered_methods


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, 99)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compressed_embeddings", *args], capture_output=True, text=True, timeout=600
    )


def test_compress_command_writes_a_complete_folder(tmp_path, input_ids):
    source = tmp_path / "source"
    tiny_model("llama").save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    output = tmp_path / "out"
    result = run_cli("compress", str(source), "--method", "svd", "--code-dim", "8", "--output", str(output), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "ratio" in result.stdout and "mean cosine" in result.stdout and "Saved to" in result.stdout
    names = {path.name for path in output.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "modeling.py",
        "configuration.py",
        "layer.py",
        "version.py",
        "compression_report.json",
    } <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    report = json.loads((output / "compression_report.json").read_text())
    assert report["code_dim"] == 8 and report["method"] == "svd"

    # The folder works exactly like the original: tokenizer + model by Auto classes.
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert tokenizer("w5 w6")["input_ids"] == tiny_tokenizer()("w5 w6")["input_ids"]
    loaded = AutoModelForCausalLM.from_pretrained(output).eval()
    expected = compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, expected(input_ids).logits)


def test_compress_command_refuses_existing_output_and_bad_input(tmp_path):
    source = tmp_path / "source"
    tiny_model("llama").save_pretrained(source)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    result = run_cli("compress", str(source), "--method", "svd", "--code-dim", "8", "--output", str(existing))
    assert result.returncode == 2
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (existing / "keep.txt").read_text() == "precious"

    result = run_cli("compress", str(tmp_path / "missing"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "no such file or directory" in result.stderr

    result = run_cli("compress", str(source), "--method", "svd", "--code-dim", "32", "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "code_dim" in result.stderr and "hidden size" in result.stderr
    assert not (tmp_path / "o").exists()


def test_evaluate_command_measures_perplexity_and_fidelity(tmp_path):
    source = tmp_path / "source"
    tiny_model("llama", "LlamaForCausalLM").save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    compressed = tmp_path / "compressed"
    assert (
        run_cli("compress", str(source), "--method", "svd", "--code-dim", "4", "--output", str(compressed)).returncode
        == 0
    )
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{4 + (i * 7) % 90}" for i in range(300)))
    report = tmp_path / "report.json"
    result = run_cli(
        "evaluate", str(compressed), "--reference", str(source), "--text", str(text), "--max-length", "64",
        "--stride", "32", "--json", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    measured = json.loads(report.read_text())
    entry = measured["perplexity"][str(text)]
    assert entry["model"]["num_tokens"] == entry["reference"]["num_tokens"] == 299  # 300 tokens, all but the first
    assert entry["ratio"] == entry["model"]["perplexity"] / entry["reference"]["perplexity"]
    assert entry["ratio"] != 1.0  # rank 4 of 16 changes the model
    fidelity = measured["fidelity"]
    assert 0 < fidelity["mean_cosine"] < 1 and fidelity["frequency_weighted_cosine"] is not None

    # The reference evaluated against itself: ratio 1 and perfect fidelity.
    result = run_cli("evaluate", str(source), "--reference", str(source), "--text", str(text), "--json", str(report))
    assert result.returncode == 0, result.stderr
    measured = json.loads(report.read_text())
    assert measured["perplexity"][str(text)]["ratio"] == 1.0
    assert abs(measured["fidelity"]["mean_cosine"] - 1.0) < 1e-6

    result = run_cli("evaluate", str(source))
    assert result.returncode == 2 and "Nothing to evaluate" in result.stderr
    result = run_cli("evaluate", str(source), "--reference", str(compressed))
    assert result.returncode == 2 and "itself compressed" in result.stderr
    result = run_cli("evaluate", str(source), "--text", str(tmp_path / "missing.txt"))
    assert result.returncode == 2 and "--text" in result.stderr


def test_compress_command_calibrates_transform_coding(tmp_path, input_ids):
    source = tmp_path / "source"
    tiny_model("llama", "LlamaForCausalLM", vocab_size=2000).save_pretrained(source)  # room for a d x d decoder
    tiny_tokenizer().save_pretrained(source)
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"w{4 + (i * 7) % 90}" for i in range(300)))
    output = tmp_path / "out"
    result = run_cli(
        "compress", str(source), "--method", "transform_coding", "--ratio", "3", "--first-tier-rows", "10",
        "--calibration-text", str(text), "--output", str(output), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Calibrated on 1 document (300 tokens)" in result.stderr
    report = json.loads((output / "compression_report.json").read_text())
    assert report["method"] == "transform_coding" and report["bytes_ratio_vs_fp32"] >= 3
    assert report["config"]["tier_sizes"][0] == 10 and report["config"]["decoder_dtype"] == "int8"  # the preset's
    assert (output / "packed_codes.py").exists()
    loaded = AutoModelForCausalLM.from_pretrained(output).eval()
    with torch.no_grad():
        assert loaded(input_ids).logits.isfinite().all()

    other = tmp_path / "other"
    result = run_cli("compress", str(source), "--method", "svd", "--calibration-text", str(text), "-o", str(other))
    assert result.returncode == 2 and "transform_coding only" in result.stderr
    result = run_cli(
        "compress", str(source), "--method", "svd", "--decoder-dtype", "int8", "-o", str(other), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((other / "compression_report.json").read_text())["config"]["decoder_dtype"] == "int8"


# ------------------------------------------------------------------------------------------------ generated flags
def compress_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["compress"]


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def test_compress_flags_are_generated_from_the_registered_settings():
    parser = compress_parser()
    options, groups = flags(parser), {group.title: group for group in parser._action_groups}
    for name, entry in registered_methods().items():
        group = groups[f"{name} settings"]
        assert group.description == entry.config_class.summary
        for item in dataclasses.fields(entry.config_class):
            action = options[f"--{item.name.replace('_', '-')}"]
            assert f"{name}: {item.metadata['help']}".replace("%", "%%") in action.help  # help from the metadata
            assert action.default is None and action.dest == item.name
            assert action.choices == item.metadata.get("choices")
    method = options["--method"]
    assert all(
        name in method.metavar and entry.config_class.summary in method.help
        for name, entry in registered_methods().items()
    )
    # The flags of before keep their names and reach the config; the ones not given stay the method's defaults.
    argv = ["m", "-o", "o", "--method", "autoencoder", "--epochs", "3", "--max-steps", "7", "--batch-size", "16"]
    config = cli._compression_config(parser.parse_args([*argv, "--init", "svd"]))
    assert (config.epochs, config.max_steps, config.batch_size, config.init) == (3, 7, 16, "svd")
    assert config.cosine_weight == 0.1995  # not given: the method's default
    argv = ["m", "-o", "o", "--first-tier-rows", "64", "--input-weight", "0.5", "--kl-steps", "9"]
    config = cli._compression_config(parser.parse_args(argv))
    assert config.method == "transform_coding"  # the default
    assert (config.first_tier_rows, config.input_weight, config.kl_steps) == (64, 0.5, 9)
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "-o", "o", "--init", "zeros"])  # choices from the metadata


@dataclasses.dataclass
class ToyCliConfig(MethodConfig):
    name = "toy_cli"
    summary = "a toy method of the CLI tests"

    strength: float | None = dataclasses.field(default=None, metadata={"help": "How strong, in % (None)."})
    mode: str = dataclasses.field(default="a", metadata={"help": "Mode (a).", "choices": ("a", "b")})
    sharp: bool = dataclasses.field(default=True, metadata={"help": "Sharpen the codes (yes)."})
    epochs: int = dataclasses.field(default=2, metadata={"help": "Toy epochs (2)."})  # autoencoder has one too


@pytest.fixture
def registries(monkeypatch):
    """The method registries, restored after the test."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(configuration, "METHOD_CONFIGS", dict(configuration.METHOD_CONFIGS))


def test_a_method_registered_before_the_parser_is_built_gets_its_flags(registries):
    register_method(ToyCliConfig, lambda matrix, config, *, show_progress=True: None)
    parser = compress_parser()
    options = flags(parser)
    assert options["--strength"].type is float and options["--mode"].choices == ("a", "b")
    assert isinstance(options["--no-sharp"], argparse.BooleanOptionalAction)
    shared = "autoencoder: Epochs over the rows of E (the paper's 30). toy_cli: Toy epochs (2)."
    assert options["--epochs"].help == shared  # one flag for a setting two methods have
    help_text = parser.format_help()
    assert "toy_cli settings:" in help_text and "a toy method of the CLI tests" in help_text
    assert "toy_cli: How strong, in % (None)." in help_text
    args = parser.parse_args(["m", "-o", "o", "--method", "toy_cli", "--strength", "2.5", "--mode", "b", "--no-sharp"])
    assert cli._compression_config(args).method_config == ToyCliConfig(strength=2.5, mode="b", sharp=False)


def test_a_setting_shared_with_another_type_is_refused_at_parser_build(registries):
    @dataclasses.dataclass
    class Clashing(MethodConfig):
        name = "toy_clashing"
        epochs: float = dataclasses.field(default=1.0, metadata={"help": "Fractional epochs."})

    register_method(Clashing, lambda matrix, config, *, show_progress=True: None)
    with pytest.raises(TypeError, match="'epochs' of method 'toy_clashing'"):
        cli.build_parser()
