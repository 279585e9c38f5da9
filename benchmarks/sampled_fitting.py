"""What the sampled softmax of transform coding's fitting costs, forced on a vocabulary small enough to compare.

    python benchmarks/sampled_fitting.py [--output docs/results]

Beyond `KL_FULL_VOCAB` rows (65,536), each step of fitting to the logits computes the softmax over the
`KL_TOP_ROWS` most important rows and a fresh sample of the others (`methods/transform_coding.py`). No real model with
such a vocabulary is available here, so this forces the sampled path on SmolLM2-135M-Instruct (49,152 rows: the top
16,384 and 16,384 sampled of the other 32,768 each step) and compares it with the exact path, both calibrated as the
quality benchmark's "transform coding (calibrated)" row (the Brown and Wikipedia calibration splits), at ratio 10, on
the same test texts (`quality.py`'s settings, first 4,096 tokens). Writes `sampled-fitting.md` and `.json`.
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import CALIBRATED, CORPORA, LanguageModelBench  # noqa: E402

from compressed_embeddings import CompressedEmbeddingConfig  # noqa: E402
from compressed_embeddings.methods import transform_coding  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(REPO / "docs" / "results"))
    args = parser.parse_args()
    bench = LanguageModelBench(max_tokens=4096, max_length=512, stride=256)
    config = CompressedEmbeddingConfig(compression_ratio=10)
    rows = {}
    for variant, full_vocab in (("exact softmax", transform_coding.KL_FULL_VOCAB), ("sampled softmax", 32768)):
        transform_coding.KL_FULL_VOCAB = full_vocab  # below SmolLM2's 49,152 rows: the sampled path
        (row,) = bench.compressed(CALIBRATED, config, 10)
        rows[variant] = {
            key: row[key] for key in ("compress_seconds", "mean_cosine", *(f"perplexity_ratio_{c}" for c in CORPORA))
        }
        print(variant, rows[variant], flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    command = "python benchmarks/sampled_fitting.py"
    output = Path(args.output)
    (output / "sampled-fitting.json").write_text(
        json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Fitting to the logits: exact vs sampled softmax (SmolLM2, ratio 10)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}",
        "",
        "Transform coding calibrated on the Brown and Wikipedia calibration splits, ratio 10, 100 fitting steps; the",
        "sampled softmax forced on SmolLM2's 49,152 rows (top 16,384 + 16,384 sampled each step). Perplexity on the",
        "first 4,096 tokens of each test split, against the original's.",
        "",
        "| fitting | Brown | Wikipedia | mean cosine | compress s |",
        "|---|---|---|---|---|",
    ]
    for variant, row in rows.items():
        lines.append(
            f"| {variant} | {row['perplexity_ratio_brown']:.4f}x | {row['perplexity_ratio_wikipedia']:.4f}x | "
            f"{row['mean_cosine']:.4f} | {row['compress_seconds']:.1f} |"
        )
    (output / "sampled-fitting.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
