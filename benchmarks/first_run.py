"""The first try, as a new user makes it: `compressed-embeddings compress MODEL --ratio 10 --output DIR`, nothing else.

    python benchmarks/first_run.py [--output docs/results] [--work outputs/first-run]

Runs the command line on SmolLM2-135M-Instruct (fp32, fetched by `compressed_embeddings.assets`) twice, as a user
would type it: with the defaults (transform coding, calibrated on the package's own generic text) and with
`--calibration-text none` (data-free: the model generates its own calibration text), each timed from the shell (wall
clock and peak RSS of the whole process: loading, fetching or generating the calibration text, compressing, writing).
Then `compressed-embeddings evaluate` scores each output against the original on the Brown and Wikipedia test splits
(first 4,096 tokens, windows of 512 every 256; the same as `benchmarks/quality.py`). Also times
`import compressed_embeddings` in fresh processes (median of 5) against `import transformers` plus the Auto classes.

Writes `first-run.md` and `first-run.json` into `--output`.
"""

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from compressed_embeddings.assets import smollm2_path, text_splits
from compressed_embeddings.texts import DOCUMENT_SEPARATOR

CORPORA = ("brown", "wikipedia")
RUNS = {"default": [], "data-free": ["--calibration-text", "none"]}
CLI = [sys.executable, "-m", "compressed_embeddings"]


def timed(command: list[str]) -> dict:
    """Run `command`; its wall time and the peak RSS of the process (`/usr/bin/time -v` where available)."""
    time_tool = Path("/usr/bin/time")
    prefix = [str(time_tool), "-f", "%M"] if time_tool.exists() else []
    start = time.perf_counter()
    result = subprocess.run(prefix + command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    peak = int(result.stderr.strip().splitlines()[-1]) * 1024 if prefix else None
    return {"seconds": seconds, "peak_rss_bytes": peak, "stdout": result.stdout, "stderr": result.stderr}


def import_seconds(statement: str, repeats: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results")
    parser.add_argument("--work", type=Path, default=Path("outputs") / "first-run")
    parser.add_argument("--ratio", type=float, default=10)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    source = str(smollm2_path())
    texts = {}
    for corpus in CORPORA:
        path = args.work / f"{corpus}-test.txt"
        path.write_text(DOCUMENT_SEPARATOR.join(text_splits(corpus)["test"]))
        texts[corpus] = str(path)
    rows = {}
    for name, extra in RUNS.items():
        out = args.work / name
        command = ["compress", source, "--ratio", f"{args.ratio:g}", "--output", str(out), "--overwrite", "--quiet"]
        print(f"[{name}] compressed-embeddings {shlex.join(command[:4] + extra)} ...", flush=True)
        run = timed(CLI + command + extra)
        chose = next(line for line in run["stderr"].splitlines() if line.startswith("Compressing with"))
        scores = args.work / f"{name}.json"
        evaluate = ["evaluate", str(out), "--reference", source, "--max-tokens", "4096", "--json", str(scores)]
        subprocess.run(CLI + evaluate + [a for corpus in CORPORA for a in ("--text", texts[corpus])], check=True)
        result = json.loads(scores.read_text())
        report = json.loads((out / "compression_report.json").read_text())
        rows[name] = {
            "command": "compressed-embeddings "
            + shlex.join(["compress", "MODEL", "--ratio", f"{args.ratio:g}", "--output", "DIR"] + extra),
            "seconds": run["seconds"],
            "peak_rss_bytes": run["peak_rss_bytes"],
            "chose": chose,
            "calibration_data": report["config"]["calibration_data"],
            "bytes_ratio": report["bytes_ratio"],
            "stored_bytes": report["stored_bytes"],
            "perplexity_ratio": {c: result["perplexity"][texts[c]]["ratio"] for c in CORPORA},
            "perplexity": {c: result["perplexity"][texts[c]]["model"]["perplexity"] for c in CORPORA},
            "reference_perplexity": {c: result["perplexity"][texts[c]]["reference"]["perplexity"] for c in CORPORA},
        }
        print(
            f"  {run['seconds']:.0f} s, "
            + ", ".join(f"{c} {rows[name]['perplexity_ratio'][c]:.4f}x" for c in CORPORA),
            flush=True,
        )
    imports = {
        "import compressed_embeddings": import_seconds("import compressed_embeddings"),
        "import transformers + Auto classes (baseline)": import_seconds(
            "import torch, transformers; from transformers import AutoConfig, AutoModel, PreTrainedModel"
        ),
    }
    meta = {
        "command": "python " + shlex.join(["benchmarks/first_run.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": "SmolLM2-135M-Instruct (fp32)",
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "first-run.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "imports": imports}, indent=2) + "\n"
    )
    lines = [
        "# The first try: `compressed-embeddings compress MODEL --ratio 10 --output DIR`",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Model: {meta['model']}, from `compressed_embeddings.assets`. Perplexity: the first 4,096 tokens of the "
        "Brown and Wikipedia test splits, windows of 512 every 256, against the original's. Time and peak RSS: the "
        "whole `compress` process, from the shell (loading, calibration text, compressing, writing).",
        "",
        "| run | command | calibrated on | ratio (bytes) | time (s) | peak RSS (MiB) | ppl Brown (x orig) | "
        "ppl Wikipedia (x orig) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        rss = f"{row['peak_rss_bytes'] / 2**20:.0f}" if row["peak_rss_bytes"] else "-"
        lines.append(
            f"| {name} | `{row['command']}` | {row['calibration_data'] or 'nothing'} | {row['bytes_ratio']:.2f} | "
            f"{row['seconds']:.0f} | {rss} | "
            + " | ".join(f"{row['perplexity'][c]:.2f} ({row['perplexity_ratio'][c]:.4f}x)" for c in CORPORA)
            + " |"
        )
    lines += ["", "What the command said it chose:", ""]
    lines += [f"- {name}: {row['chose']}" for name, row in rows.items()]
    lines += ["", "Import time (fresh processes, median of 5):", ""]
    lines += [f"- `{what}`: {seconds:.2f} s" for what, seconds in imports.items()]
    (args.output / "first-run.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
