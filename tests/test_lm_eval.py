"""A compressed model under lm-evaluation-harness, offline, with local tasks over local text: `lm_eval_scores` (the
model object in lm-eval's `HFLM`) and `compressed-embeddings evaluate --lm-eval TASKS --lm-eval-include DIR`.
docs/guides/evaluate-with-lm-eval.md is the recipe."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_model
from tiny_tokenizers import gpt2_tokenizer

from compressed_embeddings import CompressedEmbeddingConfig, cli, compress_model, decompress_model
from compressed_embeddings.evaluation import lm_eval_scores

#: Two tasks over one local jsonl file: the perplexity of whole documents (`loglikelihood_rolling`, as lm-eval's
#: wikitext) and a two-way choice (`multiple_choice`, accuracy).
TASKS = {
    "tiny_ppl": """task: tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
""",
    "tiny_choice": """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
}


def write_tasks(folder: Path, documents: int = 6) -> Path:
    """The task YAMLs and their jsonl data (texts of the tiny tokenizer's words `w4`..`w98`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "docs.jsonl"
    with data.open("w") as out:
        for i in range(documents):
            words = [f"w{4 + (i * 13 + j * 7) % 95}" for j in range(12 + i)]
            distractor = f"w{4 + (i * 31 + 50) % 95}"
            record = {"text": " ".join(words), "query": " ".join(words[:4]), "gold": i % 2}
            record["choices"] = [words[4], distractor] if i % 2 == 0 else [distractor, words[4]]
            out.write(json.dumps(record) + "\n")
    for name, template in TASKS.items():
        (folder / f"{name}.yaml").write_text(template.format(data=data))
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("lm-eval-tasks"))


def svd_model():
    return compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )


def test_lm_eval_scores_a_compressed_model_as_its_decoded_matrix(tasks):
    compressed = svd_model()
    decoded = decompress_model(copy.deepcopy(compressed))  # a stock Llama holding the decoded matrix
    tokenizer = gpt2_tokenizer()
    scores = lm_eval_scores(compressed, tokenizer, "tiny_ppl,tiny_choice", include_path=tasks, batch_size=4)
    assert set(scores) == {"tiny_ppl", "tiny_choice"}
    assert {"word_perplexity,none", "bits_per_byte,none"} <= set(scores["tiny_ppl"])
    assert {"acc,none", "acc_stderr,none"} <= set(scores["tiny_choice"])
    assert 1 < scores["tiny_ppl"]["word_perplexity,none"] < 1e4  # a random model over 99 tokens
    assert 0 <= scores["tiny_choice"]["acc,none"] <= 1
    # lm-eval ran the codes, the decoder and the tied head: the same scores as the decoded matrix in a stock model,
    # and other scores than the original (rank 8 of 32 changes the model).
    same = lm_eval_scores(decoded, tokenizer, ["tiny_ppl", "tiny_choice"], include_path=tasks, batch_size=4)
    original = lm_eval_scores(tiny_model("llama"), tokenizer, ["tiny_ppl"], include_path=tasks)
    for task, metrics in scores.items():
        for metric, value in metrics.items():
            assert same[task][metric] == pytest.approx(value, rel=1e-5), (task, metric)
    assert original["tiny_ppl"]["word_perplexity,none"] != pytest.approx(scores["tiny_ppl"]["word_perplexity,none"])


def test_lm_eval_scores_says_what_is_wrong(tasks, monkeypatch):
    model, tokenizer = tiny_model("llama"), gpt2_tokenizer()
    with pytest.raises(ValueError, match="knows no task no_such_task nor in"):
        lm_eval_scores(model, tokenizer, "tiny_ppl,no_such_task", include_path=tasks)
    with pytest.raises(ValueError, match="not a folder"):
        lm_eval_scores(model, tokenizer, "tiny_ppl", include_path=tasks / "missing")
    with pytest.raises(ValueError, match="names no lm-eval task"):
        lm_eval_scores(model, tokenizer, " , ")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'compressed-embeddings\[lm-eval\]'"):
        lm_eval_scores(model, tokenizer, "tiny_ppl", include_path=tasks)


def test_evaluate_command_runs_lm_eval_tasks(tmp_path, tasks):
    source = tmp_path / "source"
    tiny_model("llama", "LlamaForCausalLM").save_pretrained(source)
    gpt2_tokenizer().save_pretrained(source)
    compressed = tmp_path / "compressed"
    model = svd_model()
    model.save_pretrained(compressed)
    gpt2_tokenizer().save_pretrained(compressed)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "compressed_embeddings", "evaluate", str(compressed), "--reference", str(source),
            "--lm-eval", "tiny_ppl,tiny_choice", "--lm-eval-include", str(tasks), "--json", str(report),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    measured = json.loads(report.read_text())["lm_eval"]
    assert set(measured) == {"model", "reference"}
    in_process = lm_eval_scores(model, gpt2_tokenizer(), "tiny_ppl,tiny_choice", include_path=tasks, batch_size=4)
    for task, metrics in in_process.items():
        for metric, value in metrics.items():
            assert measured["model"][task][metric] == pytest.approx(value, rel=1e-5), (task, metric)
    assert (
        measured["reference"]["tiny_ppl"]["word_perplexity,none"]
        != measured["model"]["tiny_ppl"]["word_perplexity,none"]
    )
    word_perplexity = measured["model"]["tiny_ppl"]["word_perplexity,none"]
    reference = measured["reference"]["tiny_ppl"]["word_perplexity,none"]
    assert f"tiny_ppl: word_perplexity {word_perplexity:.4f}, reference {reference:.4f}" in result.stdout
    assert "tiny_choice: acc " in result.stdout and "(+/- " in result.stdout


def test_evaluate_command_refuses_lm_eval_misuse(tmp_path, tasks, capsys, monkeypatch):
    source = tmp_path / "source"
    tiny_model("llama", "LlamaForCausalLM").save_pretrained(source)
    gpt2_tokenizer().save_pretrained(source)
    assert cli.main(["evaluate", str(source), "--lm-eval-include", str(tasks)]) == 2
    assert "--lm-eval-include adds task files for --lm-eval TASKS" in capsys.readouterr().err
    assert cli.main(["evaluate", str(source), "--lm-eval", "t", "--lm-eval-include", str(tmp_path / "no")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["evaluate", str(source), "--lm-eval", "no_such_task", "--lm-eval-include", str(tasks)]) == 2
    assert "lm-eval knows no task no_such_task" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert cli.main(["evaluate", str(source), "--lm-eval", "tiny_ppl"]) == 2
    assert "pip install 'compressed-embeddings[lm-eval]'" in capsys.readouterr().err
