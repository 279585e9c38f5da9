"""Wall time, stage times and peak memory of transform coding (with fitting to the logits) on large vocabularies.

    python benchmarks/scale_transform_coding.py [--sizes 65536x640 262144x640] [--output docs/results]

Each size runs in a fresh process (`--worker`): it builds the synthetic V x d float32 matrix of `scale.py` (a rank-d/8
signal plus noise) and synthetic calibration statistics of the shapes a real calibration on 16,384 tokens gives
(8,192 kept hidden states and their second moment from Gaussian states, Zipf token counts and predicted
probabilities), then runs `compress_embedding` at ratio 10 (bytes, float32) with the preset's 100 fitting steps and
a tied head. Time and memory depend only on the shapes; quality is measured on real models by `quality.py` and
`first_run.py`. Peak RSS is the process's high-water mark (`getrusage`), including Python, torch, the matrix and the
statistics (reported separately as "before"). Writes `scale-transform-coding.md` and `.json`.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["65536x640", "262144x640"])
    parser.add_argument("--output", default=str(REPO / "docs" / "results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
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
