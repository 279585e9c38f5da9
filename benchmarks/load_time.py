"""Load time of compressed checkpoints with the checks of their stored tensors on and off, in the same run.

    python benchmarks/load_time.py [--repeats 15] [--threads N] [--work outputs/load-time] [--output docs/results]

Two checkpoints, written into `--work` by this commit's code (so that they carry checksums): SmolLM2-135M-Instruct
(fp32, from `compressed_embeddings.assets`) compressed at ratio 10 by transform coding, and a 262,144 x 640 random
embedding (a one-layer Llama with a tied head, random weights, seed 0: the embedding is nearly the whole checkpoint,
the harshest case for checks whose cost grows with it) compressed the same way. Both use the preset's stored layout
(packed codes, int8 decoder) without fitting to the logits and calibrated on random token ids: load time depends on
the stored layout and sizes, not on the fitted values.

`AutoModelForCausalLM.from_pretrained` (package imported) is timed in this process with the checks on
(`modeling._check_stored`: the value checks and the SHA-256 of every stored tensor of the embedding) and off (replaced
by a no-op: loading as before the checks existed), the two alternating within every repetition, which one goes first
alternating too, after one untimed load of each (the files in the page cache). Reported: medians, the median of the
paired ratios (on / off within a repetition) with its 95 % interval, the checks alone (median of direct calls on the
loaded model), their share of the load without them (a second estimate of the ratio, far less noisy than the
difference of two loads) and the checksums computed by `save_pretrained`. `--threads` sets torch's threads for the
timed part (on a machine shared with other jobs, two OpenMP threads on two busy cores make one load vary from 2 to 17
s; one thread does not). Writes `load-time.md` and `load-time.json`.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import median_interval  # noqa: E402

from compressed_embeddings import CompressedEmbeddingConfig, compress_model, modeling  # noqa: E402
from compressed_embeddings.assets import smollm2_path  # noqa: E402
from compressed_embeddings.calibration import random_token_calibration  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RANDOM_ROWS, RANDOM_WIDTH = 262144, 640
CHECKPOINTS = {
    "smollm2-tc10": "SmolLM2-135M-Instruct, ratio 10",
    "random-262144x640-tc10": f"random {RANDOM_ROWS:,} x {RANDOM_WIDTH} embedding (one-layer Llama), ratio 10",
}


def original(name: str):
    if name == "smollm2-tc10":
        return AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=RANDOM_ROWS, hidden_size=RANDOM_WIDTH, intermediate_size=1024, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def build(work: Path) -> dict[str, Path]:
    """Compress and save each checkpoint into `work` (with this commit's code)."""
    folders = {}
    for name in CHECKPOINTS:
        model = original(name).eval()
        config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=10, kl_steps=0)
        calibration = random_token_calibration(model, num_tokens=1024, max_length=256)
        model = compress_model(model, config, calibration=calibration, show_progress=False)
        folders[name] = work / name
        model.save_pretrained(folders[name])
        print(f"[{time.strftime('%H:%M:%S')}] built {name}: {model.compression_report}", file=sys.stderr, flush=True)
        del model
        gc.collect()
    return folders


def load_seconds(folder: Path) -> float:
    gc.collect()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder)
    seconds = time.perf_counter() - start
    del model
    return seconds


def median_ms(function, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(folder: Path, repeats: int) -> dict:
    checks = modeling._check_stored
    variants = {"on": checks, "off": lambda *args, **kwargs: None}
    times = {"on": [], "off": []}
    try:
        for variant in variants:  # untimed: the files in the page cache, the code paths warm
            modeling._check_stored = variants[variant]
            load_seconds(folder)
        for repeat in range(repeats):
            for variant in ("on", "off") if repeat % 2 == 0 else ("off", "on"):
                modeling._check_stored = variants[variant]
                times[variant].append(load_seconds(folder))
    finally:
        modeling._check_stored = checks
    ratios = [on / off for on, off in zip(times["on"], times["off"])]
    model = AutoModelForCausalLM.from_pretrained(folder)
    digests = json.loads((folder / "config.json").read_text())["compressed_embedding"]["tensor_sha256"]
    embedding_bytes = sum(t.numel() * t.element_size() for t in model.get_input_embeddings().state_dict().values())
    return {
        "load_on_s": statistics.median(times["on"]),
        "load_off_s": statistics.median(times["off"]),
        "ratio": statistics.median(ratios),
        "ratio_interval": median_interval(ratios),
        "checks_ms": median_ms(lambda: checks(model, folder, {}), 2 * repeats + 1),
        "checksums_at_save_ms": median_ms(lambda: modeling.tensor_sha256(model), 2 * repeats + 1),
        "embedding_mib": embedding_bytes / 2**20,
        "checkpoint_mib": sum(path.stat().st_size for path in folder.glob("*.safetensors")) / 2**20,
        "tensors_checksummed": len(digests),
        "times": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch threads while timing (default: torch's)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "load-time")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    folders = build(args.work)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for name, folder in folders.items():
        rows[name] = measure(folder, args.repeats)
        print(name, {k: v for k, v in rows[name].items() if k != "times"}, file=sys.stderr, flush=True)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s) while timing"
    )
    command = "python benchmarks/load_time.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    meta = {
        "command": command,
        "machine": machine,
        "repeats": args.repeats,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "load-time.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.output / "load-time.md").write_text(render(meta, rows))
    print(render(meta, rows))


def render(meta: dict, rows: dict) -> str:
    lines = [
        "# Load time: the checks of stored tensors on and off",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Load average (1 min) before / after: {meta['load_average'][0]} / {meta['load_average'][1]} (the machine is "
        "shared: the two variants alternate within each repetition, so that both see the same load)",
        "",
        f"`AutoModelForCausalLM.from_pretrained` in one process, {meta['repeats']} repetitions, each loading the "
        "checkpoint with the checks (values, and the SHA-256 of every stored tensor of the embedding against "
        "config.json) and without them (a no-op in their place), in alternating order. Times: medians; ratio: median "
        "of the paired ratios (with / without, within a repetition) with its 95 % interval. *checks alone*: the "
        "checks called on the loaded model, and their share of the load without them; *at save*: the checksums "
        "`save_pretrained` computes.",
        "",
        "| checkpoint | embedding stored (MiB) | checkpoint (MiB) | load with checks (s) | without (s) | ratio "
        "| checks alone (ms) | checks / load without | checksums at save (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        low, high = row["ratio_interval"]
        lines.append(
            f"| {CHECKPOINTS[name]} | {row['embedding_mib']:.1f} | {row['checkpoint_mib']:.1f} | "
            f"{row['load_on_s']:.3f} | {row['load_off_s']:.3f} | {row['ratio']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{row['checks_ms']:.1f} | {row['checks_ms'] / 1e3 / row['load_off_s']:.1%} | "
            f"{row['checksums_at_save_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
