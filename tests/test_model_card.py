"""The model card (`compressed_embeddings.cards.model_card`, written by `save_pretrained`): for every method, its
text, size figures in the method's own terms, metadata, calibration, measured figures, and the card of a reloaded
model."""

import dataclasses
import re

import pytest
import torch
from huggingface_hub import ModelCard
from tiny_tokenizers import gpt2_tokenizer
from transformers import AutoModel, AutoModelForCausalLM, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from compressed_embeddings import CompressedEmbeddingConfig, collect_calibration, compress_model, model_card
from compressed_embeddings.cards import CARD_MARKER, METHOD_TEXTS, write_model_card
from compressed_embeddings.modeling import CODE_FILES

METHODS = ("autoencoder", "svd", "transform_coding")
HAS_CALIBRATION_FIELD = "calibration_data" in {f.name for f in dataclasses.fields(CompressedEmbeddingConfig)}
CALIBRATION = "Brown corpus, calibration split (16,384 tokens)"


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


BUILDERS = {"llama": (tiny_llama, AutoModelForCausalLM), "bert": (tiny_bert, AutoModel)}


def method_config(method: str, **overrides) -> CompressedEmbeddingConfig:
    extra = {"autoencoder": {"max_steps": 30}, "transform_coding": {"first_tier_rows": 16, "kl_steps": 5}}
    extra = extra.get(method, {})
    return CompressedEmbeddingConfig(method=method, compression_ratio=4.0, **{**extra, **overrides})


def calibrate(model):
    """Calibration statistics from a few hundred tokens of text (fast, unlike the data-free default's own text)."""
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(f"w{i}" for i in torch.randint(4, 99, (64,), generator=generator).tolist()) for _ in range(8)]
    return collect_calibration(model, gpt2_tokenizer(), texts, max_length=64, show_progress=False, source=CALIBRATION)


def compress_any(model, method: str, **overrides):
    """`model` compressed with `method` (transform coding: calibrated on a little text)."""
    calibration = {"calibration": calibrate(model)} if method == "transform_coding" else {}
    return compress_model(model, method_config(method, **overrides), show_progress=False, **calibration)


def compress(family: str, method: str, **overrides):
    return compress_any(BUILDERS[family][0](), method, **overrides)


def saved_card(model, folder) -> ModelCard:
    model.save_pretrained(folder)
    card = ModelCard.load(folder / "README.md")
    assert CARD_MARKER in card.text
    return card


def code_files_listed(text: str) -> list[str]:
    match = re.search(r"the repository carries the model code \(([^;]*);", text)
    assert match, text
    return re.findall(r"`([^`]+)`", match.group(1))


def mean_bits(block: dict) -> float:
    bits, sizes = block["code_bits"], block["tier_sizes"]
    return sum(n * sum(widths) for n, widths in zip(sizes, bits)) / (block["num_embeddings"] * block["embedding_dim"])


def set_calibration(model, value: str | None) -> None:
    model.config.compressed_embedding = {**model.config.compressed_embedding, "calibration_data": value}


@pytest.fixture(scope="module", params=[(family, method) for family in BUILDERS for method in METHODS], ids=str)
def compressed(request, tmp_path_factory):
    """(family, method, compressed model, its card parsed back from README.md, the folder it was saved to)."""
    family, method = request.param
    model = compress(family, method)
    folder = tmp_path_factory.mktemp(f"{family}-{method}")
    return family, method, model, saved_card(model, folder), folder


# ------------------------------------------------------------------------------------------- every method
def test_card_metadata(compressed):
    family, method, _, card, _ = compressed
    assert card.data.base_model_relation == "quantized"
    assert card.data.library_name == "transformers"
    assert {"compressed-embeddings", method} <= set(card.data.tags)
    assert card.data.pipeline_tag == {"llama": "text-generation", "bert": "feature-extraction"}[family]
    assert card.data.license is None  # built from a config: no source stating one
    assert getattr(card.data, "base_model", None) is None


def test_card_lists_exactly_the_code_files(compressed):
    _, _, _, card, folder = compressed
    assert code_files_listed(card.text) == list(CODE_FILES)
    assert set(CODE_FILES) <= {path.name for path in folder.iterdir()}


def test_card_states_the_method_in_its_own_terms(compressed):
    _, method, model, card, _ = compressed
    text, report, block = card.text, model.compression_report, model.config.compressed_embedding
    assert f"| method | {METHOD_TEXTS[method].name} |" in text
    assert METHOD_TEXTS[method].description.split("{")[0][:60] in text
    # Bytes, against the embedding in the model's dtype and in fp32, for every method: the report's figures.
    assert f"{report.original_bytes:,} -> {report.stored_bytes:,} in {report.dtype}, the model's dtype" in text
    assert f"({report.bytes_ratio:.2f}x, {report.original_bytes - report.stored_bytes:,} bytes saved" in text
    assert f"{report.bytes_ratio_vs_fp32:.2f}x against the matrix in fp32" in text
    for value in (report.mean_cosine, report.min_cosine, report.relative_frobenius_error):
        assert f"| {value:.4f} |" in text
    if method == "transform_coding":
        assert "code size k" not in text and "autoencoder objective" not in text and "(parameters)" not in text
        assert f"| bits per code entry | {mean_bits(block):.2f} on average" in text
        assert f"{len(block['tier_sizes'])} tier" in text
        assert (
            f"| compression ratio | {report.bytes_ratio:.2f}x (bytes, against the embedding in {report.dtype})" in text
        )
        assert ("int8 weight, one scale per code column" in text) == (block["decoder_dtype"] == "int8")
        kl = report.loss_history[1:]
        assert bool(kl) == model.config.compressed_embedding["tied_output_head"]  # llama: fitted; BertModel: no head
        if kl:
            assert (
                f"fitting to the logits: KL divergence to the original next-token distribution | {kl[0]:.4g}" in text
            )
            assert f"over {len(kl)} steps" in text
        else:
            assert "| fitting to the logits | not run (no tied output head) |" in text
        assert "## Citation" not in text
    else:
        assert f"| code size k | {report.code_dim} |" in text
        assert f"| compression ratio | {report.compression_ratio:.2f}x (parameters) |" in text
        assert ("autoencoder objective" in text) == (method == "autoencoder")
        assert "bits per code entry" not in text
        assert "@inproceedings{balazy2021direction" in text


def test_card_names_the_calibration_data(compressed):
    if not HAS_CALIBRATION_FIELD:
        pytest.skip("CompressedEmbeddingConfig has no calibration_data field yet")
    _, method, model, card, _ = compressed
    recorded = model.config.compressed_embedding["calibration_data"]
    assert recorded == (CALIBRATION if method == "transform_coding" else None)
    if recorded:
        assert f"Calibration: {recorded}." in card.text
    elif method == "transform_coding":
        assert "Calibration: none: compressed data-free" in card.text
    else:
        assert "Calibration:" not in card.text
    original = model.config.compressed_embedding
    try:
        set_calibration(model, CALIBRATION)
        assert f"Calibration: {CALIBRATION}." in model_card(model).text
        set_calibration(model, None)
        assert ("compressed data-free" in model_card(model).text) == (method == "transform_coding")
    finally:
        model.config.compressed_embedding = original


def test_card_of_a_model_loaded_back_from_disk(compressed):
    family, method, model, _, folder = compressed
    reloaded = BUILDERS[family][1].from_pretrained(folder)
    assert getattr(reloaded, "compression_report", None) is None
    text, report = model_card(reloaded, repo_id="me/tiny").text, model.compression_report
    assert f"| method | {METHOD_TEXTS[method].name} |" in text
    assert "No quality figures are recorded" in text and "cosine similarity" not in text
    assert f"{report.original_bytes:,} -> {report.stored_bytes:,} in {report.dtype}" in text  # from the layer
    assert code_files_listed(text) == list(CODE_FILES)
    if method == "transform_coding":
        assert f"| bits per code entry | {mean_bits(model.config.compressed_embedding):.2f}" in text
        assert f"| compression ratio | {report.bytes_ratio:.2f}x (bytes" in text and "code size k" not in text
    else:
        assert f"| code size k | {report.code_dim} |" in text


# ------------------------------------------------------------------------------------------- measured figures
def test_evaluation_is_rendered_and_never_invented():
    model = compress("llama", "svd")
    assert "perplexity" not in model_card(model).text.split("## Quality")[1].split("## How to load")[0].replace(
        "Task-level quality (perplexity, accuracy) was not measured", ""
    )
    evaluation = {"perplexity": {"brown test": {"original": 57.1, "compressed": 59.0}}}
    text = model_card(model, evaluation=evaluation).text
    assert "| metric | data | original | compressed | compressed / original |" in text
    assert "| perplexity | brown test | 57.10 | 59.00 | 1.033x |" in text
    assert "was not measured" not in text
    with pytest.raises(TypeError, match="evaluation"):
        model_card(model, evaluation={"perplexity": 3.0})


def test_write_model_card_passes_evaluation(tmp_path):
    model = compress("llama", "svd")
    write_model_card(model, tmp_path, evaluation={"accuracy": {"sst2 dev": {"compressed": 0.91}}})
    assert "| accuracy | sst2 dev | 0.9100 |" in ModelCard.load(tmp_path / "README.md").text


# ------------------------------------------------------------------------------------------- license
@pytest.mark.parametrize("method", METHODS)
def test_license_of_the_source_folder_is_carried(tmp_path, method):
    source = tmp_path / "source"
    tiny_llama().save_pretrained(source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# A tiny model\n")
    model = compress_any(AutoModelForCausalLM.from_pretrained(source), method)
    card = saved_card(model, tmp_path / "compressed")
    assert card.data.license == "apache-2.0" and card.data.base_model_relation == "quantized"
    # ... and survives a reload: the compressed folder's own card states it.
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "compressed")
    assert model_card(reloaded).data.license == "apache-2.0"


def test_other_license_keeps_its_name_and_a_bad_readme_is_ignored(tmp_path):
    source = tmp_path / "source"
    tiny_llama().save_pretrained(source)
    (source / "README.md").write_text("---\nlicense: other\nlicense_name: tiny-license\nlicense_link: LICENSE\n---\n")
    model = compress_model(AutoModelForCausalLM.from_pretrained(source), method_config("svd"), show_progress=False)
    data = model_card(model).data
    assert (data.license, data.license_name, data.license_link) == ("other", "tiny-license", "LICENSE")
    (source / "README.md").write_text("---\n: [unclosed\n---\n")
    assert model_card(model).data.license is None
    (source / "README.md").unlink()
    assert model_card(model).data.license is None


def test_hand_written_readme_gets_relation_and_license_only_where_missing(tmp_path):
    source = tmp_path / "source"
    tiny_llama().save_pretrained(source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    model = compress_model(AutoModelForCausalLM.from_pretrained(source), method_config("svd"), show_progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("---\nlicense: mit\n---\n\n# Mine\n")
    write_model_card(model, out)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.base_model_relation == "quantized"
    assert card.text.strip() == "# Mine"
