"""The model's own dtype end to end: fp16 / bf16 models compress, save and load without a float32 tensor."""

import json

import pytest
import torch
from conftest import load_in_fresh_process, tiny_model
from safetensors import safe_open
from safetensors.torch import save_file
from test_cli import run_cli, tiny_tokenizer
from transformers import AutoModelForCausalLM

from compressed_embeddings import CompressedEmbeddingConfig, compress_model

METHODS = {
    "svd": CompressedEmbeddingConfig(method="svd", compression_ratio=4),
    "autoencoder": CompressedEmbeddingConfig(method="autoencoder", compression_ratio=4, max_steps=20),
    "transform_coding": CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=4),
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def file_float_dtypes(folder) -> set[str]:
    """The dtypes of every floating tensor stored in a folder's safetensors files."""
    found = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as checkpoint:
            for key in checkpoint.keys():
                name = checkpoint.get_slice(key).get_dtype()
                if name in SAFETENSORS_DTYPES:
                    found.add(SAFETENSORS_DTYPES[name])
    return found


def weights_bytes(folder) -> int:
    """Bytes of the safetensors files of a folder."""
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("method", list(METHODS))
def test_compressing_keeps_the_models_dtype(tmp_path, method, dtype, input_ids):
    model = compress_model(tiny_model("llama").to(DTYPES[dtype]), METHODS[method], show_progress=False)
    floats = {name: tensor.dtype for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    assert set(floats.values()) == {DTYPES[dtype]}, floats
    report = model.compression_report
    assert report.dtype == dtype and report.original_bytes == 99 * 32 * 2
    assert report.bytes_ratio == pytest.approx(report.original_bytes / report.stored_bytes)
    assert report.bytes_ratio_vs_fp32 == pytest.approx(2 * report.bytes_ratio)
    assert f"in {dtype}" in str(report)
    if method == "transform_coding":  # its ratio counts bytes in the model's dtype
        assert report.bytes_ratio >= 4
    with torch.no_grad():
        logits = model(input_ids).logits
    assert logits.dtype == DTYPES[dtype] and logits.isfinite().all()
    model.save_pretrained(tmp_path)
    assert file_float_dtypes(tmp_path) == {dtype}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == dtype
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto").eval()
    assert loaded.dtype == DTYPES[dtype]
    with torch.no_grad():
        reloaded = loaded(input_ids).logits
    torch.testing.assert_close(reloaded, logits, rtol=0, atol=1e-2 * logits.abs().max().item())


def test_a_bf16_checkpoint_loads_in_bf16_by_both_paths(tmp_path, input_ids):
    model = compress_model(tiny_model("llama").to(torch.bfloat16), METHODS["svd"], show_progress=False)
    with torch.no_grad():
        logits = model(input_ids).logits
    model.save_pretrained(tmp_path / "ckpt")
    save_file({"input_ids": input_ids, "logits": logits.float()}, str(tmp_path / "ref.safetensors"))
    entry = {
        "family": "llama",
        "path": str(tmp_path / "ckpt"),
        "reference": str(tmp_path / "ref.safetensors"),
        "auto_classes": ["AutoModelForCausalLM"],
        "saved_auto_class": "AutoModelForCausalLM",
        "dtype": "auto",
    }
    (tmp_path / "manifest.json").write_text(json.dumps([entry]))
    for mode in ("import", "remote"):
        (row, _) = load_in_fresh_process(tmp_path / "manifest.json", mode)
        assert row["dtype"] == "bfloat16" and row["float_dtypes"] == ["torch.bfloat16"], row
        assert row["max_abs_diff"] <= 1e-2 * row["reference_scale"], row


@pytest.fixture(scope="module")
def bf16_source(tmp_path_factory):
    source = tmp_path_factory.mktemp("bf16") / "source"
    model = tiny_model("llama", "LlamaForCausalLM", vocab_size=3000, hidden_size=64, intermediate_size=2048)
    model = model.to(torch.bfloat16)  # the body outweighs the embedding: an fp32 copy of it outgrows the source
    model.save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    return source


def test_the_cli_keeps_a_bf16_source_in_bf16(tmp_path, bf16_source):
    output = tmp_path / "out"
    result = run_cli("compress", str(bf16_source), "--method", "svd", "--ratio", "10", "-o", str(output), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "(bfloat16)" in result.stderr and "in bfloat16" in result.stdout
    assert "warning: the output folder" not in result.stderr
    assert file_float_dtypes(output) == {"bfloat16"}
    report = json.loads((output / "compression_report.json").read_text())
    saved = report["original_bytes"] - report["stored_bytes"]
    assert report["dtype"] == "bfloat16" and report["original_bytes"] == 3000 * 64 * 2
    assert weights_bytes(bf16_source) - weights_bytes(output) >= 0.8 * saved


def test_the_cli_dtype_flag_overrides_the_source(tmp_path, bf16_source):
    output = tmp_path / "out"
    result = run_cli(
        "compress", str(bf16_source), "--method", "svd", "--ratio", "10", "--dtype", "float32", "-o", str(output)
    )
    assert result.returncode == 0, result.stderr
    assert file_float_dtypes(output) == {"float32"}
    # the rest of the model doubled: the folder outgrew its source, and the command says why
    assert weights_bytes(output) > weights_bytes(bf16_source)
    assert "warning: the output folder is not" in result.stderr and "--dtype auto" in result.stderr


def folder_bytes(folder) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.mark.real
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_a_smollm2_checkpoint_shrinks_in_its_own_dtype(tmp_path, dtype):
    """SmolLM2 stored in `dtype` (Hub LMs ship bf16), compressed at ratio 10 by the CLI (and, in bf16, by
    `compress_model(...).save_pretrained`): every float tensor stays in `dtype` and the folder shrinks by at least
    80 % of the embedding bytes saved."""
    from transformers import AutoTokenizer

    from compressed_embeddings.assets import smollm2_path

    source = tmp_path / "source"
    AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=getattr(torch, dtype)).save_pretrained(source)
    AutoTokenizer.from_pretrained(smollm2_path()).save_pretrained(source)
    assert file_float_dtypes(source) == {dtype}
    output = tmp_path / "cli"
    result = run_cli("compress", str(source), "--method", "svd", "--ratio", "10", "-o", str(output), "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((output / "compression_report.json").read_text())
    assert report["dtype"] == dtype and report["bytes_ratio"] >= 10
    outputs = [output]
    if dtype == "bfloat16":
        model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
        config = CompressedEmbeddingConfig(method="svd", compression_ratio=10)
        model = compress_model(model, config, show_progress=False)
        model.save_pretrained(tmp_path / "api")
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "api")
        outputs.append(tmp_path / "api")
    saved = report["original_bytes"] - report["stored_bytes"]
    for folder in outputs:
        assert file_float_dtypes(folder) == {dtype}, folder
        assert folder_bytes(source) - folder_bytes(folder) >= 0.8 * saved, (folder, folder_bytes(folder))
