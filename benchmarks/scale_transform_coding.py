"""Wall time, stage times and peak memory of transform coding (with fitting to the logits) on large vocabularies.

    python benchmarks/scale_transform_coding.py [--sizes 65536x640 262144x640] [--output docs/results]

Each size runs in a fresh process (`--worker`): it builds the synthetic V x d float32 matrix of `scale.py` (a rank-d/8
signal plus noise) and synthetic calibration statistics of the shapes a real calibration on 16,384 tokens gives
(8,192 kept hidden states and their second moment from Gaussian states, Zipf token counts and predicted
probabilities), then runs `compress_embedding` at ratio 10 (bytes, float32) with the preset's 100 fitting steps and
a tied head. Time and memory depend only on the shapes; quality is measured on real models by `quality.py` and
`first_run.py`. Peak RSS is the process's high-water mark (`getrusage`), including Python, torch, the matrix and the
statistics (reported separately as "before"). Writes `scale-transform-coding.md` and `.json`.

    python benchmarks/scale_transform_coding.py --models gemma3-262144x640 llama-128256x4096 [--dtype bfloat16]

runs the whole library path instead, end to end: a model of that architecture with random weights (Gemma-3-270M's
18 layers; Llama-3-8B's widths with 2 layers, enough to time the embedding, which does not depend on the depth beyond
the calibration pass) in `--dtype`, then `compress_model` at ratio 10 calibrated on the package's generic text
(16,384 tokens of the Brown calibration split, SmolLM2's tokenizer: its ids are valid in both vocabularies) and
data-free (16,384 tokens the model generates itself). Wall time and stage times of `compress_model`, peak RSS of the
process (the model's own weights included). Writes `scale-transform-coding-models.md` and `.json`.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENS, KEPT = 16384, 8192


def worker(args) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale import synthetic

    from compressed_embeddings import CompressedEmbeddingConfig, compress_embedding
    from compressed_embeddings.calibration import CalibrationStats

    rows, cols = map(int, args.size.split("x"))
    matrix = synthetic(rows, cols)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(KEPT, cols, generator=generator)
    zipf = 1.0 / torch.arange(1, rows + 1, dtype=torch.float64)
    stats = CalibrationStats(
        token_counts=(zipf * TOKENS / zipf.sum()).round().long(),
        output_second_moment=hidden.T.double() @ hidden.double() / KEPT,
        num_tokens=TOKENS,
        output_probability=zipf / zipf.sum(),
        output_inputs=hidden,
        source="synthetic",
    )
    config = CompressedEmbeddingConfig(compression_ratio=10).resolved(
        num_embeddings=rows, embedding_dim=cols, tied_output_head=True
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    start = time.perf_counter()
    _, report = compress_embedding(matrix, config, show_progress=False, calibration=stats)
    result = {
        "size": args.size,
        "rows": rows,
        "cols": cols,
        "compress_s": round(time.perf_counter() - start, 1),
        "stage_seconds": {name: round(seconds, 1) for name, seconds in report.stage_seconds.items()},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "before_gib": round(before, 2),
        "matrix_gib": round(rows * cols * 4 / 2**30, 2),
        "bytes_ratio": round(report.bytes_ratio, 2),
        "mean_bits": round(report.mean_bits, 2),
        "mean_cosine": round(report.mean_cosine, 4),
        "fitting_steps": len(report.loss_history) - 1,
    }
    Path(args.result).write_text(json.dumps(result))


#: Architectures of `--models`: (config class, its keyword arguments, model class).
ARCHITECTURES = {
    "gemma3-262144x640": (
        "Gemma3TextConfig",
        dict(
            vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
            num_key_value_heads=1, head_dim=256, sliding_window=512, tie_word_embeddings=True,
        ),
        "Gemma3ForCausalLM",
    ),
    "llama-128256x4096": (
        "LlamaConfig",
        dict(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=2, num_attention_heads=32,
            num_key_value_heads=8, tie_word_embeddings=True,
        ),
        "LlamaForCausalLM",
    ),
}  # fmt: skip


def model_worker(args) -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    from compressed_embeddings import CompressedEmbeddingConfig, compress_model
    from compressed_embeddings.assets import smollm2_path

    config_name, kwargs, class_name = ARCHITECTURES[args.model]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**kwargs)
    model = getattr(transformers, class_name)(config).to(getattr(torch, args.dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    calibration = "generic" if args.calibration == "generic" else None
    start = time.perf_counter()
    model = compress_model(
        model, CompressedEmbeddingConfig(compression_ratio=10), calibration=calibration, tokenizer=tokenizer,
        show_progress=False,
    )  # fmt: skip
    report = model.compression_report
    result = {
        "model": args.model,
        "dtype": args.dtype,
        "calibration": args.calibration,
        "rows": report.num_embeddings,
        "cols": report.embedding_dim,
        "layers": config.num_hidden_layers,
        "compress_s": round(time.perf_counter() - start, 1),
        "stage_seconds": {name: round(seconds, 1) for name, seconds in report.stage_seconds.items()},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "before_gib": round(before, 2),
        "model_gib": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, 2),
        "bytes_ratio": round(report.bytes_ratio, 2),
        "mean_bits": round(report.mean_bits, 2),
        "fitting_steps": len(report.loss_history) - 1,
    }
    Path(args.result).write_text(json.dumps(result))


def models_main(args) -> None:
    import torch

    output = Path(args.output)
    results = []
    for name in args.models:
        for calibration in args.calibrations:
            path = output / f".scale-model-{name}-{calibration}.json"
            command = [sys.executable, __file__, "--model-worker", "--model", name, "--dtype", args.dtype]
            subprocess.run([*command, "--calibration", calibration, "--result", str(path)], check=True, cwd=REPO)
            results.append(json.loads(path.read_text()))
            path.unlink()
            print(results[-1], flush=True)
    threads = torch.get_num_threads()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads"
    command = "python benchmarks/scale_transform_coding.py " + " ".join(sys.argv[1:])
    (output / "scale-transform-coding-models.json").write_text(
        json.dumps({"command": command.strip(), "machine": machine, "results": results}, indent=2) + "\n"
    )
    stages = list(dict.fromkeys(stage for r in results for stage in r["stage_seconds"]))
    lines = [
        "# Scale: transform coding end to end on large-vocabulary architectures (CPU)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine}",
        "",
        "`compress_model` at ratio 10 on a model of the architecture with random weights (see the script's",
        "docstring), calibrated on 16,384 tokens of the package's generic text or data-free (the model generates",
        "16,384 tokens). Seconds per stage of `CompressionReport.stage_seconds` (calibration included); peak RSS of",
        "the whole process, of which *before* was held before compressing (Python, torch, the model's weights).",
        "",
        f"| architecture | layers | dtype | calibration | total s | {' | '.join(stages)} | peak RSS GiB | before GiB |"
        " model GiB | bits/entry |",
        "|---|---|---|---|---|" + "---|" * len(stages) + "---|---|---|---|",
    ]
    for r in results:
        times = " | ".join(str(r["stage_seconds"].get(stage, "-")) for stage in stages)
        lines.append(
            f"| {r['rows']:,} x {r['cols']} ({r['model'].split('-')[0]}) | {r['layers']} | {r['dtype']} | "
            f"{r['calibration']} | {r['compress_s']} | {times} | {r['peak_rss_gib']} | {r['before_gib']} | "
            f"{r['model_gib']} | {r['mean_bits']} |"
        )
    (output / "scale-transform-coding-models.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["65536x640", "262144x640"])
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHITECTURES), help="End to end (see the docstring).")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--calibrations", nargs="+", default=["generic", "none"], choices=["generic", "none"])
    parser.add_argument("--model-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--calibration", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(REPO / "docs" / "results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.model_worker:
        return model_worker(args)
    if args.models:
        return models_main(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        path = output / f".scale-transform-coding-{size}.json"
        command = [sys.executable, __file__, "--worker", "--size", size, "--result", str(path)]
        subprocess.run(command, check=True, cwd=REPO)
        results.append(json.loads(path.read_text()))
        path.unlink()
    import torch

    threads = torch.get_num_threads()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads"
    command = "python benchmarks/scale_transform_coding.py " + " ".join(sys.argv[1:])
    (output / "scale-transform-coding.json").write_text(
        json.dumps({"command": command.strip(), "machine": machine, "results": results}, indent=2) + "\n"
    )
    stages = list(results[0]["stage_seconds"])
    lines = [
        "# Scale: transform coding on large vocabularies (CPU)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine}",
        "",
        "Synthetic matrix and calibration statistics (see the script's docstring: time and memory depend only on the",
        "shapes), ratio 10 in float32 bytes, tied head, 100 steps of fitting to the logits. Seconds per stage of",
        "`CompressionReport.stage_seconds`; peak RSS of the whole process, of which *before* was held before",
        "compressing (Python, torch, the matrix, the statistics).",
        "",
        f"| V x d | total s | {' | '.join(stages)} | peak RSS GiB | before GiB | E GiB | bits/entry | mean cos |",
        "|---|---|" + "---|" * len(stages) + "---|---|---|---|---|",
    ]
    for r in results:
        times = " | ".join(str(r["stage_seconds"].get(stage, "-")) for stage in stages)
        lines.append(
            f"| {r['rows']:,} x {r['cols']} | {r['compress_s']} | {times} | {r['peak_rss_gib']} | {r['before_gib']} "
            f"| {r['matrix_gib']} | {r['mean_bits']} | {r['mean_cosine']} |"
        )
    (output / "scale-transform-coding.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
