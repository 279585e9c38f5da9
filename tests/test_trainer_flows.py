"""The stock example scripts' flows on compressed checkpoints: run_glue.py, run_qa.py and run_clm.py reproduced with
the same public APIs (tests/trainer_flows.py; we do not ship or run the scripts themselves).

Training runs in fresh processes two ways: as the scripts do with `--trust_remote_code True` (the package is never
imported: the code files inside the checkpoint run), and with `import compressed_embeddings`. Every output folder is
then reloaded in fresh processes by both paths and must predict what the trained model predicted.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_model
from tiny_tokenizers import bert_tokenizer, gpt2_tokenizer

from compressed_embeddings import CompressedEmbeddingConfig, compress_model

SCRIPT = Path(__file__).resolve().parent / "trainer_flows.py"
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def run_flow(*args: str, home: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is ~50x faster than contended ones on a shared machine
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    line = next(line for line in reversed(result.stdout.splitlines()) if line.startswith("RESULTS="))
    return json.loads(line[len("RESULTS=") :])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    config = CompressedEmbeddingConfig(method="svd", code_dim=8)
    bert = compress_model(tiny_model("bert", **NO_DROPOUT), config, show_progress=False)
    bert.save_pretrained(root / "bert")
    bert_tokenizer().save_pretrained(root / "bert")
    gpt2 = compress_model(tiny_model("gpt2"), config, show_progress=False)
    gpt2.save_pretrained(root / "gpt2")
    tokenizer = gpt2_tokenizer()
    tokenizer.add_tokens(["w99"])  # one token more than the model: run_clm.py resizes the embedding
    tokenizer.save_pretrained(root / "gpt2")
    return root


@pytest.fixture(scope="module")
def trained(sources, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    results = {}
    for mode in ("remote", "import"):
        out = root / f"trained-{mode}"
        results[mode] = run_flow("train", mode, str(sources / "bert"), str(sources / "gpt2"), str(out), home=root)
    return root, results


@pytest.mark.parametrize("mode", ["remote", "import"])
def test_stock_trainer_fine_tunes_compressed_checkpoints(trained, mode):
    _, results = trained
    result = results[mode]
    assert result.pop("package_imported") == (mode == "import")
    assert set(result) == {"glue", "qa", "clm"}
    for task, row in result.items():
        assert row["class"].startswith("Compressed"), (task, row)
        assert row["module"].startswith("transformers_modules." if mode == "remote" else "compressed_embeddings.")
        assert row["steps"] == 4 and math.isfinite(row["train_loss"]), (task, row)
        # As in the paper: codes frozen, the decoder trains.
        assert not row["codes_trainable"] and not row["codes_changed"], (task, row)
        assert row["decoder_changed"], (task, row)
    assert result["clm"]["vocab_size"] == 100  # resized to the tokenizer, as run_clm.py does


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_fine_tuned_output_reloads_with_equal_predictions(trained, mode):
    root, _ = trained
    results = run_flow("reload", mode, str(root / "trained-remote"), str(root / "trained-import"), home=root)
    assert results.pop("package_imported") == (mode == "import")
    assert len(results) == 6, sorted(results)
    for key, row in results.items():
        task = key.split("/")[1]
        assert row["class"].startswith("Compressed"), (key, row)
        assert row["module"].startswith("transformers_modules." if mode == "remote" else "compressed_embeddings.")
        assert row["missing"] == [] and row["unexpected"] == [], (key, row)  # the trained head was saved
        assert row["finite"] and row["max_abs_diff"] is not None and row["max_abs_diff"] < 1e-5, (key, row)
        assert not row["codes_trainable"], (key, row)
        if task == "glue":  # the config built the way run_glue.py builds it survived training and saving
            # (transformers 5 drops `finetuning_task`, for stock configs too: nothing to check there)
            assert row["num_labels"] == 2, row
            assert sorted(row["id2label"]) == ["0", "1"], row
        if task == "clm":
            assert row["vocab_size"] == 100 and row["num_embeddings"] == 100, row
