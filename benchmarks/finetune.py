"""Fine-tuning comparison on Rotten Tomatoes: original vs SVD vs the paper's autoencoder, codes frozen and trainable.

    python benchmarks/finetune.py [--ratios 5 10] [--seeds 1 2 3] [--epochs 3] [--output docs/results]
    python benchmarks/finetune.py --device cuda --jobs 8   # on a GPU: 8 fine-tunings at a time share it
    python benchmarks/finetune.py --max-train 64 --max-eval 64 --seeds 1 --epochs 1 --ae-epochs 1 \
        --ratios 10 --output /tmp/finetune-smoke        # a smoke run: minutes, meaningless numbers

all-MiniLM-L6-v2 with a fresh classification head, fine-tuned with the same recipe and the same seeds for every
variant (see examples/finetune_rotten_tomatoes.py, which runs one fine-tuning): the original model; SVD and the
autoencoder (full paper recipe, 30 epochs, unless `--ae-epochs`) at each ratio, with the codes frozen (the paper's
setting: the decoder trains) and trainable. Each run is a fresh process; its result is kept in `--work` and reused
when the command is run again with the same settings, so an interrupted comparison resumes where it stopped.
`--device cuda` fine-tunes (and trains the autoencoders) on the GPU with the same recipe; `--jobs N` runs N
fine-tunings at a time (after building the compressed models, also N at a time), each with 1/N of the CPU threads.

Writes `finetune.md` (mean ± sample std of the validation accuracy over seeds, the embedding fidelity of each
compressed model, timings, and the command line that produced it) and `finetune.json` (every run) into `--output`.
The paper reports the autoencoder keeping more accuracy than SVD at the same size; the table says whether these
runs agree, from the numbers measured, with the spread over seeds.
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "finetune_rotten_tomatoes.py"


def variants(ratios: list[float]) -> list[dict]:
    """Every (method, ratio, codes) fine-tuned: the original once, each compressed model frozen and trainable."""
    rows = [{"method": "original", "ratio": None, "codes": None}]
    for ratio in ratios:
        for method in ("svd", "autoencoder"):
            for codes in ("frozen", "trainable"):
                rows.append({"method": method, "ratio": ratio, "codes": codes})
    return rows


def _run_key(variant: dict, seed: int, settings: dict) -> str:
    text = json.dumps({**variant, "seed": seed, **settings}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _child_env(jobs: int) -> dict:
    """The environment of a child process: with `jobs` at a time, each gets its share of the CPU threads."""
    if jobs <= 1:
        return dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def compress_one(method: str, ratio: float, settings: dict, work: Path, jobs: int = 1) -> None:
    """Build the compressed model of (method, ratio) into `work` in a fresh process (no-op when already built)."""
    command = [sys.executable, str(EXAMPLE), "--compress-only", "--method", method, "--ratio", str(ratio)]
    command += ["--work", str(work)]
    if settings.get("ae_epochs") is not None:
        command += ["--ae-epochs", str(settings["ae_epochs"])]
    print(f"[{time.strftime('%H:%M:%S')}] compress {method} cr{ratio:g}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=_child_env(jobs))


def _label(variant: dict) -> str:
    return f"{variant['method']}" + (f"-cr{variant['ratio']:g}-{variant['codes']}" if variant["ratio"] else "")


def result_path(variant: dict, seed: int, settings: dict, work: Path) -> Path:
    """Where the result of one fine-tuning is kept (its name holds a hash of the variant, seed and settings)."""
    return work / "runs" / f"{_label(variant)}-seed{seed}-{_run_key(variant, seed, settings)}.json"


def run_one(variant: dict, seed: int, settings: dict, work: Path, jobs: int = 1) -> dict:
    """One fine-tuning in a fresh process (resumed from `work/runs` when already done with these settings)."""
    label = _label(variant)
    result_path_ = result_path(variant, seed, settings, work)
    if result_path_.exists():
        return json.loads(result_path_.read_text())
    command = [sys.executable, str(EXAMPLE), "--seed", str(seed), "--work", str(work), "--result", str(result_path_)]
    command += ["--method", variant["method"], "--device", settings.get("device", "cpu")]
    if variant["ratio"]:
        command += ["--ratio", str(variant["ratio"])]
    if variant["codes"] == "trainable":
        command.append("--unfreeze-codes")
    for name in ("epochs", "max_train", "max_eval", "ae_epochs", "batch_size", "learning_rate"):
        if settings.get(name) is not None:
            command += [f"--{name.replace('_', '-')}", str(settings[name])]
    print(f"[{time.strftime('%H:%M:%S')}] {label} seed {seed}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=_child_env(jobs))
    result = json.loads(result_path_.read_text())
    print(f"[{time.strftime('%H:%M:%S')}] {label} seed {seed}: accuracy {result['accuracy']:.4f}", flush=True)
    return result


def _fidelity(work: Path, method: str, ratio: float, ae_epochs: int | None) -> dict | None:
    name = f"minilm-{method}-cr{ratio:g}" + (f"-ae{ae_epochs}ep" if method == "autoencoder" and ae_epochs else "")
    path = work / name / "compression_report.json"
    return json.loads(path.read_text()) if path.exists() else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def _where(results: list[dict]) -> str:
    """The machine the runs ran on, from the runs themselves (one device per table, or each one listed)."""
    devices = sorted({r.get("device", "cpu") for r in results})
    if devices == ["cpu"]:
        return f"{platform.platform()}, {results[0]['threads'] if results else '?'} CPU threads"
    return f"{' + '.join(devices)}; {platform.platform()}"


def table(results: list[dict], settings: dict, work: Path, command: str, invocation: dict | None = None) -> str:
    """The markdown report: one row per variant, mean ± std over seeds, and the AE-vs-SVD comparison."""
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        groups.setdefault((row["variant"]["method"], row["variant"]["ratio"], row["variant"]["codes"]), []).append(row)
    subset = settings.get("max_train") is not None or settings.get("max_eval") is not None
    smoke = (settings.get("max_train") or 10**9) < 1000 or (settings.get("max_eval") or 10**9) < 500
    lines = [
        "# Fine-tuning all-MiniLM-L6-v2 on Rotten Tomatoes: original vs compressed embeddings",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} ({_where(results)}); {len(results)} runs, "
        f"{sum(r['wall_time_s'] for r in results) / 60:.1f} min of run time summed over runs (compressions "
        "included)"
        + (
            f"; this invocation took {invocation['wall_time_s'] / 60:.1f} min wall-clock with {invocation['jobs']} "
            f"run(s) at a time and ran {invocation['runs_done']} of them (the others were resumed from `--work`)."
            if invocation
            else "."
        ),
        "",
    ]
    if smoke:
        lines += ["**Smoke run on a subset of the data: these numbers say nothing about the methods.**", ""]
    elif subset:
        lines += [
            "**Reduced budget** (this 2-CPU machine): every run trains on the same fixed random subset of the "
            "training split (`--max-train`), so the comparison is fair but absolute accuracies are below what the "
            "full split gives. Run the command without `--max-train` for the full recipe (hours on 2 CPUs).",
            "",
        ]
    lines += [
        f"Validation accuracy on {results[0]['eval_examples'] if results else '?'} sentences after "
        f"{settings['epochs']:g} epoch(s) on {results[0]['train_examples'] if results else '?'} (batch "
        f"{settings['batch_size']}, learning rate {settings['learning_rate']:g}, linear schedule, 10% warm-up); "
        "mean ± sample standard deviation over seeds. Codes *frozen*: the decoder trains (the paper's setting).",
        "",
        "| method | ratio | codes | accuracy | seeds | embedding params | mean cosine | train time / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for (method, ratio, codes), rows in groups.items():
        mean, std = _mean_std([r["accuracy"] for r in rows])
        summary[(method, ratio, codes)] = (mean, std, len(rows))
        fidelity = _fidelity(work, method, ratio, settings.get("ae_epochs")) if ratio else None
        cosine = f"{fidelity['mean_cosine']:.4f}" if fidelity else "1 (exact)" if method == "original" else "?"
        train_time = statistics.mean(r["train_time_s"] for r in rows)
        lines.append(
            f"| {method} | {f'{ratio:g}' if ratio else '-'} | {codes or '-'} | {100 * mean:.2f} ± {100 * std:.2f} | "
            f"{len(rows)} | {rows[0]['embedding_parameters']:,} | {cosine} | {train_time:.0f} s |"
        )
    lines += ["", "Autoencoder minus SVD, same ratio and codes setting (accuracy points, mean over seeds):", ""]
    for (method, ratio, codes), (mean, std, n) in summary.items():
        if method != "autoencoder" or ("svd", ratio, codes) not in summary:
            continue
        svd_mean, svd_std, _ = summary[("svd", ratio, codes)]
        diff = 100 * (mean - svd_mean)
        spread = 100 * max(std, svd_std) if n > 1 else float("nan")
        if n < 2:
            verdict = "one seed: no spread to compare with"
        elif abs(diff) > spread:
            verdict = "autoencoder better" if diff > 0 else "SVD better"
        else:
            verdict = "within the spread over seeds"
        lines.append(f"- ratio {ratio:g}, codes {codes}: {diff:+.2f} ({verdict}; larger std {spread:.2f})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--ae-epochs", type=int, help="Autoencoder epochs (default: the paper's 30).")
    parser.add_argument("--max-train", type=int, help="Smoke runs: first N training sentences only.")
    parser.add_argument("--max-eval", type=int, help="Smoke runs: first N validation sentences only.")
    parser.add_argument("--work", default=str(REPO / "outputs" / "finetune"))
    parser.add_argument("--output", default=str(REPO / "docs" / "results"))
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="Where the fine-tunings (and autoencoders) run."
    )
    parser.add_argument("--jobs", type=int, default=1, help="Fine-tunings run at a time (on one GPU: they share it).")
    args = parser.parse_args(argv)

    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "ae_epochs": args.ae_epochs,
        "max_train": args.max_train,
        "max_eval": args.max_eval,
    }
    if args.device != "cpu":  # CPU runs keep the keys they had before there was a --device
        settings["device"] = args.device
    work, output = Path(args.work), Path(args.output)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = max(1, args.jobs)
    plan = [(variant, seed) for variant in variants(args.ratios) for seed in args.seeds]
    pending = [(v, seed) for v, seed in plan if not result_path(v, seed, settings, work).exists()]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Build every compressed model still needed first (each once), so that runs started together do not race
        # to build it.
        # The original's runs need no compressed model: they start at once, beside the compressions.
        models = sorted({(v["method"], v["ratio"]) for v, _ in pending if v["ratio"]})
        compressions = [pool.submit(compress_one, m, r, settings, work, jobs) for m, r in models]
        futures = {
            i: pool.submit(run_one, variant, seed, settings, work, jobs)
            for i, (variant, seed) in enumerate(plan)
            if not variant["ratio"]
        }
        for future in compressions:
            future.result()
        for i, (variant, seed) in enumerate(plan):
            if i not in futures:
                futures[i] = pool.submit(run_one, variant, seed, settings, work, jobs)
        futures = [futures[i] for i in range(len(plan))]
        results = [{"variant": variant, **future.result()} for (variant, _), future in zip(plan, futures)]
    invocation = {
        "wall_time_s": time.perf_counter() - start,
        "jobs": jobs,
        "runs_done": len(pending),
    }
    command = " ".join(["python benchmarks/finetune.py", *(argv if argv is not None else sys.argv[1:])])
    output.mkdir(parents=True, exist_ok=True)
    (output / "finetune.json").write_text(
        json.dumps({"command": command, "settings": settings, "invocation": invocation, "runs": results})
    )
    (output / "finetune.md").write_text(table(results, settings, work, command, invocation))
    print((output / "finetune.md").read_text())


if __name__ == "__main__":
    main()
