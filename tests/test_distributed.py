"""Data-parallel compression with 2 CPU processes under `accelerate launch` matches the one-process run.

`accelerate launch --cpu --num_processes 2` starts 2 processes only through `mpirun` (absent here); without it, the
launcher starts one. `--multi_gpu` starts them through torchrun, and on a machine without an accelerator (the GPUs
are hidden here) the autoencoder's default `Accelerator` runs on CPU over gloo.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_python
from transformers import AutoModelForCausalLM

import compressed_embeddings  # noqa: F401  (registers the compressed classes)
from compressed_embeddings.evaluation import embedding_fidelity

SCRIPT = REPO / "tests" / "distributed_compress.py"


def _run(command: list[str], output) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(CUDA_VISIBLE_DEVICES="")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    result = subprocess.run(
        [*command, str(SCRIPT), str(output)], capture_output=True, text=True, env=env, timeout=300, cwd=REPO
    )
    if result.returncode:
        pytest.fail(f"{command} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return json.loads((output / "compression_report.json").read_text())


def test_two_cpu_processes_give_the_one_process_checkpoint(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from distributed_compress import build_model

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    two = _run(launch, tmp_path / "two")
    one = _run([sys.executable], tmp_path / "one")
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert len(two["loss_history"]) == len(one["loss_history"]) == 3
    assert two["loss_history"] == pytest.approx(one["loss_history"], rel=1e-4), "the same optimisation"
    assert two["loss_history"][-1] < two["loss_history"][0], "it trained"
    original = build_model().get_input_embeddings().weight.detach()
    cosines = {}
    for name in ("one", "two"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name)
        assert type(model).__name__ == "CompressedLlamaForCausalLM"
        with torch.no_grad():
            decoded = model.get_input_embeddings()(torch.arange(original.shape[0]))
        cosines[name] = embedding_fidelity(original, decoded).mean_cosine
    assert cosines["one"] == pytest.approx(one["mean_cosine"], abs=1e-6), "the checkpoint holds what was reported"
    assert abs(cosines["two"] - cosines["one"]) < 1e-3, cosines
    assert cosines["two"] > 0.8, cosines


def test_bf16_mixed_precision_from_the_accelerate_environment(tmp_path):
    """`accelerate launch --mixed_precision bf16` sets ACCELERATE_MIXED_PRECISION; the autoencoder trains under it."""
    code = """
import json, sys
import torch
from accelerate.state import AcceleratorState
from compressed_embeddings import CompressedEmbeddingConfig, compress_embedding

generator = torch.Generator().manual_seed(0)
matrix = torch.randn(2000, 8, generator=generator) @ torch.randn(8, 64, generator=generator)
config = CompressedEmbeddingConfig(method="autoencoder", code_dim=8, epochs=3, batch_size=64, learning_rate=1e-2)
report = compress_embedding(matrix, config, show_progress=False)[1]
print("RESULT=" + json.dumps({"precision": str(AcceleratorState().mixed_precision), **report.to_dict()}))
"""
    results = {}
    for precision in ("no", "bf16"):
        out = run_python(code, env={"ACCELERATE_MIXED_PRECISION": precision, "OMP_NUM_THREADS": "1"}).stdout
        results[precision] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT="))[7:])
    assert results["bf16"]["precision"] == "bf16" and results["no"]["precision"] == "no"
    assert results["bf16"]["loss_history"] != results["no"]["loss_history"], "bf16 autocast changed the arithmetic"
    assert results["bf16"]["loss_history"][-1] < results["bf16"]["loss_history"][0]
    assert results["bf16"]["mean_cosine"] == pytest.approx(results["no"]["mean_cosine"], abs=0.02)
