import json
import math
import random

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from compressed_embeddings.evaluation import (
    FidelityReport,
    PerplexityResult,
    _sliding_windows,
    embedding_fidelity,
    perplexity,
    sentence_embedding_similarity,
)
from compressed_embeddings.texts import load_texts, token_frequencies

VOCAB_SIZE = 99
SPECIAL_TOKENS = ["[UNK]", "[PAD]", "[BOS]"]
WORDS = [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL_TOKENS))]


def make_tokenizer(with_bos: bool = False) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + WORDS)}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = WhitespaceSplit()
    if with_bos:
        backend.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", model_max_length=64
    )


def make_texts(num_docs: int = 3, words_per_doc: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words_per_doc)) for _ in range(num_docs)]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def token_ids(tokenizer, texts):
    return torch.tensor(tokenizer("\n\n".join(texts))["input_ids"])


def chunk_nll_sum(model, ids):
    """Sum of next-token NLL over one independent chunk, computed by hand from the logits."""
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].double()
    return float(torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="sum")), ids.numel() - 1


# ---------------------------------------------------------------------------------------------------------- perplexity


def test_untrained_model_perplexity_is_vocab_order(model, tokenizer):
    result = perplexity(model, tokenizer, make_texts(), max_length=32, stride=16, show_progress=False)
    assert isinstance(result, PerplexityResult)
    assert VOCAB_SIZE / 2 < result.perplexity < VOCAB_SIZE * 2
    assert math.isclose(result.perplexity, math.exp(result.nll))
    assert result.to_dict() == {
        "perplexity": result.perplexity,
        "nll": result.nll,
        "num_tokens": result.num_tokens,
        "num_windows": result.num_windows,
    }


@pytest.mark.parametrize("total", [120, 121, 100])  # 121 % 20 == 1: trailing 1-token window has nothing to score
def test_stride_equal_max_length_matches_independent_chunks(model, tokenizer, total):
    texts = make_texts(num_docs=3, words_per_doc=50)
    ids = token_ids(tokenizer, texts)[:total]
    assert ids.numel() == total
    max_length = 20
    nll_sum, count = 0.0, 0
    for begin in range(0, total, max_length):
        chunk = ids[begin : begin + max_length]
        if chunk.numel() < 2:
            continue
        chunk_sum, chunk_count = chunk_nll_sum(model, chunk)
        nll_sum += chunk_sum
        count += chunk_count

    result = perplexity(
        model,
        tokenizer,
        texts,
        max_length=max_length,
        stride=max_length,
        batch_size=4,
        max_tokens=total,
        show_progress=False,
    )
    expected_windows = total // max_length + (1 if total % max_length >= 2 else 0)
    assert result.num_windows == expected_windows
    assert result.num_tokens == count == total - expected_windows - (1 if total % max_length == 1 else 0)
    assert result.nll == pytest.approx(nll_sum / count, rel=1e-5)


def test_overlapping_stride_scores_every_token_once(model, tokenizer):
    texts = make_texts(num_docs=2, words_per_doc=50)
    total = token_ids(tokenizer, texts).numel()
    assert total == 100
    result = perplexity(model, tokenizer, texts, max_length=24, stride=10, batch_size=3, show_progress=False)
    assert result.num_tokens == total - 1
    assert result.num_windows == len(_sliding_windows(total, 24, 10))

    # Hand-rolled HF recipe, one window at a time, NLL computed from logits.
    nll_sum, count, previous_end = 0.0, 0, 0
    ids = token_ids(tokenizer, texts)
    for begin in range(0, total, 10):
        end = min(begin + 24, total)
        window = ids[begin:end]
        new = end - previous_end
        with torch.no_grad():
            logits = model(input_ids=window[None]).logits[0].double()
        losses = torch.nn.functional.cross_entropy(logits[:-1], window[1:], reduction="none")
        scored = losses[-min(new, window.numel() - 1) :]
        nll_sum += float(scored.sum())
        count += scored.numel()
        previous_end = end
        if end == total:
            break
    assert count == total - 1
    assert result.nll == pytest.approx(nll_sum / count, rel=1e-5)


@pytest.mark.parametrize("total,max_length,stride", [(100, 24, 10), (57, 8, 8), (57, 8, 1), (9, 8, 7), (5, 8, 3)])
def test_sliding_windows_cover_each_position_once(total, max_length, stride):
    windows = _sliding_windows(total, max_length, stride)
    scored = []
    for window in windows:
        assert 0 < window.length <= max_length
        scored.extend(range(window.end - window.num_scored, window.end))
    assert len(scored) == len(set(scored))
    if stride < max_length:
        assert sorted(scored) == list(range(1, total))
    else:
        assert sorted(scored) == [p for p in range(total) if p % max_length != 0]


def test_single_window_equals_full_sequence_nll(model, tokenizer):
    texts = make_texts(num_docs=1, words_per_doc=30)
    ids = token_ids(tokenizer, texts)
    nll_sum, count = chunk_nll_sum(model, ids)
    result = perplexity(model, tokenizer, texts, max_length=64, stride=32, show_progress=False)
    assert (result.num_windows, result.num_tokens) == (1, 29)
    assert result.nll == pytest.approx(nll_sum / count, rel=1e-5)


def test_perplexity_batch_invariance_determinism_and_mode(model, tokenizer):
    texts = make_texts()
    kwargs = {"max_length": 16, "stride": 8, "show_progress": False}
    model.train()
    a = perplexity(model, tokenizer, texts, batch_size=1, **kwargs)
    assert model.training  # previous mode restored
    model.eval()
    b = perplexity(model, tokenizer, texts, batch_size=5, **kwargs)
    c = perplexity(model, tokenizer, texts, batch_size=5, **kwargs)
    assert not model.training
    assert b == c
    assert (a.num_tokens, a.num_windows) == (b.num_tokens, b.num_windows)
    assert a.nll == pytest.approx(b.nll, rel=1e-5)


def test_perplexity_max_tokens_and_bos(model):
    tokenizer = make_tokenizer(with_bos=True)
    texts = make_texts()
    result = perplexity(model, tokenizer, texts, max_length=16, stride=8, max_tokens=50, show_progress=False)
    assert result.num_tokens == 49
    full = perplexity(model, tokenizer, texts, max_length=16, stride=8, show_progress=False)
    assert full.num_tokens == 3 * 40 + 1 - 1  # words + BOS, minus the unpredictable first token


class _OpaqueEmbedding(torch.nn.Module):
    """Embedding without a `.weight` attribute, standing in for a compressed embedding."""

    def __init__(self, embedding):
        super().__init__()
        self.inner = embedding

    def forward(self, input_ids):
        return self.inner(input_ids)


def test_perplexity_only_uses_public_forward(model, tokenizer):
    texts = make_texts()
    reference = perplexity(model, tokenizer, texts, max_length=16, stride=8, show_progress=False)
    original = model.get_input_embeddings()
    try:
        model.set_input_embeddings(_OpaqueEmbedding(original))
        assert not hasattr(model.get_input_embeddings(), "weight")
        wrapped = perplexity(model, tokenizer, texts, max_length=16, stride=8, show_progress=False)
    finally:
        model.set_input_embeddings(original)
    assert wrapped.nll == pytest.approx(reference.nll, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,texts,match",
    [
        ({"max_length": 8, "stride": 9}, None, r"`stride`.*9"),
        ({"max_length": 8, "stride": 0}, None, r"`stride`.*0"),
        ({"max_length": 8, "stride": -2}, None, r"`stride`.*-2"),
        ({"max_length": 0, "stride": 1}, None, r"`max_length`.*0"),
        ({"batch_size": 0}, None, r"`batch_size`.*0"),
        ({"max_tokens": 0}, None, r"`max_tokens`.*0"),
        ({"max_tokens": 1}, None, r"at least 2 tokens"),
        ({}, "", r"`texts`.*non-empty"),
        ({}, ["  ", ""], r"`texts`.*non-empty"),
        ({}, [], r"`texts`.*non-empty"),
    ],
)
def test_perplexity_bad_arguments(model, tokenizer, kwargs, texts, match):
    texts = make_texts(num_docs=1) if texts is None else texts
    with pytest.raises(ValueError, match=match):
        perplexity(model, tokenizer, texts, show_progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------------------- load_texts


def test_load_texts_local_sources(tmp_path):
    (tmp_path / "single.txt").write_text("hello\n\nworld\n", encoding="utf-8")
    assert load_texts(str(tmp_path / "single.txt")) == ["hello\n\nworld\n"]

    folder = tmp_path / "docs"
    folder.mkdir()
    for name, content in [("b.txt", "B"), ("a.txt", "A"), ("c.md", "ignored"), ("c.txt", "C")]:
        (folder / name).write_text(content, encoding="utf-8")
    assert load_texts(str(folder)) == ["A", "B", "C"]
    assert load_texts(str(folder), max_documents=2) == ["A", "B"]

    records = [{"text": "one", "id": 1}, {"text": "two", "id": 2}, {"text": "three", "id": 3}]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert load_texts(str(jsonl)) == ["one", "two", "three"]
    assert load_texts(str(jsonl), max_documents=2) == ["one", "two"]

    as_json = tmp_path / "data.json"
    as_json.write_text(json.dumps([{"body": r["text"]} for r in records]), encoding="utf-8")
    assert load_texts(str(as_json), text_column="body") == ["one", "two", "three"]
    as_json.write_text(json.dumps({"body": ["x", "y"]}), encoding="utf-8")
    assert load_texts(str(as_json), text_column="body") == ["x", "y"]

    with pytest.raises(KeyError, match="missing"):
        load_texts(str(jsonl), text_column="missing")
    with pytest.raises(ValueError, match="`max_documents`.*0"):
        load_texts(str(jsonl), max_documents=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .txt files"):
        load_texts(str(empty))


@pytest.mark.parametrize("name", ["missing.txt", "missing.jsonl", "missing.json", "no/such/dir"])
def test_load_texts_missing_path(tmp_path, name):
    path = name if "/" in name else str(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=name.split("/")[0]):
        load_texts(path)


def test_load_texts_hub_failure_is_clear(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        raise ConnectionError("Hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(ValueError, match=r"could not load dataset 'org/wikitext:raw'.*Hub unreachable.*local"):
        load_texts("org/wikitext:raw", split="test")
    assert calls == [("org/wikitext", "raw", "test")]


def test_load_texts_hub_success(monkeypatch):
    import datasets

    dataset = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "other": [1, 2, 3]})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, split=None: dataset)
    assert load_texts("wikitext", split="test", max_documents=2) == ["a", "b"]
    with pytest.raises(KeyError, match="body"):
        load_texts("wikitext", split="test", text_column="body")


# -------------------------------------------------------------------------------------------------- embedding_fidelity


@pytest.fixture(scope="module")
def matrix():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(257, 16, generator=generator)


def test_fidelity_identical(matrix):
    report = embedding_fidelity(matrix, matrix.clone())
    assert isinstance(report, FidelityReport)
    assert report.mean_cosine == pytest.approx(1.0, abs=1e-12)
    assert report.min_cosine == pytest.approx(1.0, abs=1e-12)
    assert report.relative_frobenius_error == 0.0
    assert report.norm_ratio == pytest.approx(1.0, abs=1e-12)
    assert report.frequency_weighted_cosine is None
    assert set(report.to_dict()) == {
        "mean_cosine",
        "min_cosine",
        "relative_frobenius_error",
        "norm_ratio",
        "frequency_weighted_cosine",
    }


def test_fidelity_scaled_and_negated(matrix):
    doubled = embedding_fidelity(matrix, 2 * matrix)
    assert doubled.mean_cosine == pytest.approx(1.0, abs=1e-12)
    assert doubled.norm_ratio == pytest.approx(2.0, abs=1e-12)
    assert doubled.relative_frobenius_error == pytest.approx(1.0, abs=1e-12)
    negated = embedding_fidelity(matrix, -matrix)
    assert negated.mean_cosine == pytest.approx(-1.0, abs=1e-12)
    assert negated.min_cosine == pytest.approx(-1.0, abs=1e-12)
    assert negated.relative_frobenius_error == pytest.approx(2.0, abs=1e-12)


def test_fidelity_chunking_matches_one_shot(matrix):
    noisy = matrix + 0.3 * torch.randn(matrix.shape, generator=torch.Generator().manual_seed(1))
    counts = torch.randint(0, 50, (matrix.shape[0],), generator=torch.Generator().manual_seed(2))
    one_shot = embedding_fidelity(matrix, noisy, token_counts=counts, chunk_size=10_000).to_dict()
    for chunk_size in (1, 7, 64, 256):
        chunked = embedding_fidelity(matrix, noisy, token_counts=counts, chunk_size=chunk_size).to_dict()
        assert chunked.keys() == one_shot.keys()
        for key in one_shot:
            assert chunked[key] == pytest.approx(one_shot[key], rel=1e-12, abs=1e-12), key

    # Reference computation with plain torch ops.
    a, b = matrix.double(), noisy.double()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert one_shot["mean_cosine"] == pytest.approx(float(cosine.mean()), rel=1e-12)
    assert one_shot["min_cosine"] == pytest.approx(float(cosine.min()), rel=1e-12)
    assert one_shot["relative_frobenius_error"] == pytest.approx(float((a - b).norm() / a.norm()), rel=1e-12)
    assert one_shot["norm_ratio"] == pytest.approx(float((b.norm(dim=1) / a.norm(dim=1)).mean()), rel=1e-12)
    weights = counts.double()
    expected = float((weights * cosine).sum() / weights.sum())
    assert one_shot["frequency_weighted_cosine"] == pytest.approx(expected, rel=1e-12)


def test_fidelity_low_precision_input(matrix):
    report = embedding_fidelity(matrix.bfloat16(), matrix.bfloat16(), chunk_size=50)
    assert report.mean_cosine == pytest.approx(1.0, abs=1e-12)
    assert report.relative_frobenius_error == 0.0


def test_fidelity_frequency_weighting():
    original = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    reconstructed = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # row 1 is flipped
    assert embedding_fidelity(original, reconstructed).mean_cosine == pytest.approx(1 / 3)
    only_good = embedding_fidelity(original, reconstructed, token_counts=torch.tensor([5, 0, 5]))
    assert only_good.frequency_weighted_cosine == pytest.approx(1.0)
    only_bad = embedding_fidelity(original, reconstructed, token_counts=torch.tensor([0, 3, 0]))
    assert only_bad.frequency_weighted_cosine == pytest.approx(-1.0)
    mixed = embedding_fidelity(original, reconstructed, token_counts=torch.tensor([1, 2, 1]))
    assert mixed.frequency_weighted_cosine == pytest.approx((1 - 2 + 1) / 4)
    assert mixed.mean_cosine == only_good.mean_cosine  # unweighted metrics unaffected


def test_fidelity_zero_rows():
    original = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    reconstructed = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    report = embedding_fidelity(original, reconstructed)
    assert report.mean_cosine == pytest.approx((1.0 + 0.0 + 0.0 + 1.0) / 4)
    assert report.min_cosine == 0.0
    assert report.norm_ratio == pytest.approx((0.0 + 2.0) / 2)  # zero-norm original rows skipped
    expected_error = math.sqrt(2 + 25 + 1) / math.sqrt(25 + 1)
    assert report.relative_frobenius_error == pytest.approx(expected_error)


def test_fidelity_bad_arguments(matrix):
    with pytest.raises(ValueError, match=r"\(257, 16\).*\(257, 15\)"):
        embedding_fidelity(matrix, matrix[:, :15])
    with pytest.raises(ValueError, match=r"\(16,\)"):
        embedding_fidelity(matrix[0], matrix[0])
    with pytest.raises(ValueError, match="`token_counts`.*\\(257,\\).*\\(3,\\)"):
        embedding_fidelity(matrix, matrix, token_counts=torch.ones(3))
    with pytest.raises(ValueError, match="`token_counts`.*non-negative"):
        embedding_fidelity(matrix, matrix, token_counts=-torch.ones(257))
    with pytest.raises(ValueError, match="`chunk_size`.*0"):
        embedding_fidelity(matrix, matrix, chunk_size=0)


# --------------------------------------------------------------------------------------------------- token_frequencies


def test_token_frequencies(tokenizer):
    counts = token_frequencies(tokenizer, ["w0 w1 w1", "w1 zzz", "w5"], VOCAB_SIZE, show_progress=False, batch_size=2)
    vocab = tokenizer.get_vocab()
    assert counts.dtype == torch.int64 and counts.shape == (VOCAB_SIZE,)
    assert counts[vocab["w0"]] == 1 and counts[vocab["w1"]] == 3 and counts[vocab["w5"]] == 1
    assert counts[vocab["[UNK]"]] == 1
    assert int(counts.sum()) == 6
    # A larger embedding (padded vocabulary) is fine; single string accepted.
    assert token_frequencies(tokenizer, "w2 w2", 128, show_progress=False)[vocab["w2"]] == 2
    with_bos = token_frequencies(
        make_tokenizer(True), ["w0", "w0"], VOCAB_SIZE, add_special_tokens=True, show_progress=False
    )
    assert with_bos[vocab["[BOS]"]] == 2
    with pytest.raises(ValueError, match="outside"):
        token_frequencies(tokenizer, ["w90"], 10, show_progress=False)
    with pytest.raises(ValueError, match="`vocab_size`.*0"):
        token_frequencies(tokenizer, ["w0"], 0, show_progress=False)


def test_frequencies_feed_fidelity(tokenizer, model):
    counts = token_frequencies(tokenizer, make_texts(), VOCAB_SIZE, show_progress=False)
    weight = model.get_input_embeddings().weight.detach()
    report = embedding_fidelity(weight, weight, token_counts=counts)
    assert report.frequency_weighted_cosine == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------- sentence similarity


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


SENTENCES = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w14 w15 w16 w17"]


def test_sentence_similarity_identical(encoder, tokenizer):
    result = sentence_embedding_similarity(encoder, encoder, tokenizer, SENTENCES, batch_size=2, show_progress=False)
    assert result["num_sentences"] == len(SENTENCES)
    for key in ("mean_cosine", "min_cosine", "median_cosine"):
        assert result[key] == pytest.approx(1.0, abs=1e-9)


def test_sentence_similarity_perturbed_and_padding_invariant(encoder, tokenizer):
    import copy

    perturbed = copy.deepcopy(encoder)
    with torch.no_grad():
        embedding = perturbed.get_input_embeddings().weight
        embedding.add_(0.5 * torch.randn(embedding.shape, generator=torch.Generator().manual_seed(3)))
    encoder.train()
    batched = sentence_embedding_similarity(
        encoder, perturbed, tokenizer, SENTENCES, batch_size=8, show_progress=False
    )
    assert encoder.training and not perturbed.training
    single = sentence_embedding_similarity(encoder, perturbed, tokenizer, SENTENCES, batch_size=1, show_progress=False)
    encoder.eval()
    assert batched["mean_cosine"] < 0.9999
    assert batched["min_cosine"] <= batched["median_cosine"] <= 1.0
    for key in ("mean_cosine", "min_cosine", "median_cosine"):  # padding is masked out of the mean pooling
        assert batched[key] == pytest.approx(single[key], abs=1e-5)
    with pytest.raises(ValueError, match="`sentences`"):
        sentence_embedding_similarity(encoder, perturbed, tokenizer, [], show_progress=False)
