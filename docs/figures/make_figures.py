"""The figures of the documentation, and the numbers they show.

    python docs/figures/make_figures.py                 # SmolLM2-135M-Instruct's embedding, ratio 10 (minutes on CPU)
    python docs/figures/make_figures.py --synthetic --output /tmp/figures     # seconds, no download (the docs test)

Writes into `--output` (default: this folder):

- `direction-vs-svd.png`: the token embedding E (V x d) of SmolLM2-135M-Instruct (fetched from PyPI and cached by
  `compressed_embeddings.assets`, checksums verified) compressed at ratio 10 by truncated SVD and by the paper's
  direction-aware autoencoder (`CompressedEmbeddingConfig.preset("svd" / "paper")`, the full published recipe).
  Left: how E becomes codes + decoder. Middle: the cosine between each row and its reconstruction, against the
  row's norm (median and 10-90 % band per norm bin). Right: their distribution (CDF, log scale for the low tail).
- `loss-terms.png`: the two terms of the paper's loss, the powered L1 `(|x_hat - x| + 1e-10) ** p` for several p,
  and the schedule of p over the epochs.
- `figures.json`: every number the figures show (k, ratios, mean / quantile cosines, relative Frobenius errors,
  times), with the command line and the machine.

Both methods are deterministic on CPU for a given seed, so re-running the command reproduces the numbers (times
aside) and the figures.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def smollm2_embedding() -> tuple[torch.Tensor, str]:
    from transformers import AutoModelForCausalLM

    from compressed_embeddings.assets import smollm2_path

    model = AutoModelForCausalLM.from_pretrained(smollm2_path())
    return model.get_input_embeddings().weight.detach().float().clone(), "SmolLM2-135M-Instruct"


def synthetic_embedding(rows: int = 2000, cols: int = 64, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Low-rank rows with widely varying norms, like trained embeddings (a test stand-in, not a result)."""
    generator = torch.Generator().manual_seed(seed)
    signal = torch.randn(rows, cols // 4, generator=generator) @ torch.randn(cols // 4, cols, generator=generator)
    rows_ = signal + 0.5 * torch.randn(rows, cols, generator=generator)
    norms = torch.exp(0.6 * torch.randn(rows, 1, generator=generator))
    return rows_ / rows_.norm(dim=1, keepdim=True) * norms, f"synthetic {rows} x {cols}"


def row_cosines(original: torch.Tensor, layer) -> torch.Tensor:
    with torch.no_grad():
        decoded = layer.weight.float()
    return torch.nn.functional.cosine_similarity(decoded.double(), original.double(), dim=1)


def measure(matrix: torch.Tensor, ratio: float, quick: bool) -> dict:
    """Compress `matrix` by SVD and by the paper's autoencoder at `ratio`; the per-row cosines and the reports."""
    from compressed_embeddings import CompressedEmbeddingConfig, compress_embedding

    budget = dict(epochs=3, l1_power_decay_epochs=2) if quick else {}
    results = {}
    for name, preset in (("SVD", "svd"), ("autoencoder (paper)", "paper")):
        config = CompressedEmbeddingConfig.preset(preset, compression_ratio=ratio, **budget)
        layer, report = compress_embedding(matrix, config, show_progress=not quick)
        cosines = row_cosines(matrix, layer)
        results[name] = {
            "cosines": cosines,
            "report": {
                key: getattr(report, key)
                for key in (
                    "method",
                    "code_dim",
                    "compression_ratio",
                    "mean_cosine",
                    "min_cosine",
                    "relative_frobenius_error",
                    "norm_ratio",
                    "wall_time_s",
                )
            },
            "quantiles": {f"p{q}": float(torch.quantile(cosines, q / 100)) for q in (1, 10, 50, 90)},
        }
    return results


COLORS = {"SVD": "#d62728", "autoencoder (paper)": "#1f77b4"}


def _schematic(ax, shape: tuple[int, int], k: int) -> None:
    """E (V x d) ~ C (V x k) . decoder (k -> d), drawn to scale in width."""
    from matplotlib.patches import FancyArrowPatch, Rectangle

    rows, cols = shape
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    width_e, height = 3.0, 7.0
    width_c = max(width_e * k / cols, 0.12)
    ax.add_patch(Rectangle((0.3, 1.5), width_e, height, facecolor="#bbbbbb", edgecolor="black"))
    ax.text(0.3 + width_e / 2, 5.0, f"E\n{rows:,} x {cols}", ha="center", va="center", fontsize=9)
    ax.text(0.3 + width_e / 2, 0.9, "token embedding", ha="center", fontsize=8)
    ax.add_patch(FancyArrowPatch((3.6, 5.0), (4.9, 5.0), arrowstyle="-|>", mutation_scale=12))
    ax.text(4.25, 5.4, "train", ha="center", fontsize=8)
    ax.add_patch(Rectangle((5.2, 1.5), width_c, height, facecolor=COLORS["autoencoder (paper)"], edgecolor="black"))
    ax.text(5.2 + width_c / 2, 0.9, f"codes\n{rows:,} x {k}", ha="center", va="top", fontsize=8)
    ax.add_patch(Rectangle((6.6, 6.5), width_e * 0.8, width_c * 1.2, facecolor="#ff7f0e", edgecolor="black"))
    ax.text(6.6 + width_e * 0.4, 7.6, f"decoder {k} -> {cols}", ha="center", fontsize=8)
    ax.text(
        7.8,
        4.2,
        "row i = decoder(code i)\n\ndecoded only for the\ntokens in the batch",
        ha="center",
        va="center",
        fontsize=8,
    )
    ax.set_title("codes + decoder replace E", fontsize=10)


def plot_direction(results: dict, matrix: torch.Tensor, label: str, ratio: float, path: Path) -> None:
    import matplotlib

    matrix_norms = matrix.double().norm(dim=1)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = next(iter(results.values()))["report"]["code_dim"]
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.0, 1.3, 1.1]})
    _schematic(axes[0], tuple(matrix.shape), k)

    order = torch.argsort(matrix_norms)
    bins = torch.tensor_split(order, 40)
    centres = torch.stack([matrix_norms[b].median() for b in bins]).numpy()
    for name, data in results.items():
        cos = data["cosines"]
        medians = torch.stack([cos[b].median() for b in bins]).numpy()
        low = torch.stack([torch.quantile(cos[b], 0.1) for b in bins]).numpy()
        high = torch.stack([torch.quantile(cos[b], 0.9) for b in bins]).numpy()
        axes[1].plot(centres, medians, color=COLORS[name], label=f"{name}: median")
        axes[1].fill_between(centres, low, high, color=COLORS[name], alpha=0.2, label=f"{name}: 10-90 %")
    axes[1].set_xlabel("norm of the original row (median of 40 bins of equal count)")
    axes[1].set_ylabel("cosine(decoded row, original row)")
    axes[1].set_title("direction kept, by row norm", fontsize=10)
    axes[1].legend(fontsize=8, loc="lower right")
    axes[1].grid(alpha=0.3)

    for name, data in results.items():
        report = data["report"]
        cosines = torch.sort(data["cosines"]).values
        fraction = torch.arange(1, cosines.numel() + 1, dtype=torch.float64) / cosines.numel()
        axes[2].plot(
            cosines.numpy(),
            fraction.numpy(),
            color=COLORS[name],
            label=f"{name}: mean {report['mean_cosine']:.4f}, 1st percentile {data['quantiles']['p1']:.3f}",
        )
    axes[2].set_xlabel("cosine(decoded row, original row)")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("fraction of the vocabulary at or below (log)")
    axes[2].set_title("distribution over the vocabulary (CDF): the low tail", fontsize=10)
    axes[2].legend(fontsize=8, loc="upper left")
    axes[2].grid(alpha=0.3)

    figure.suptitle(
        f"{label}: token embedding {matrix.shape[0]:,} x {matrix.shape[1]} at compression ratio {ratio:g} "
        f"(k = {k}), SVD vs the direction-aware autoencoder",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def plot_loss_terms(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compressed_embeddings import CompressedEmbeddingConfig
    from compressed_embeddings.losses import l1_power

    config = CompressedEmbeddingConfig.preset("paper")
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    error = torch.linspace(0, 1, 401)
    for power in (1.0, 0.5, 0.25, 0.1):
        axes[0].plot(error.numpy(), ((error + 1e-10) ** power).numpy(), label=f"p = {power:g}")
    axes[0].set_xlabel("|x_hat - x| of one entry")
    axes[0].set_ylabel("(|x_hat - x| + 1e-10) ** p")
    axes[0].set_title("powered L1: small p rewards exact entries", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    epochs = list(range(config.epochs))
    powers = [l1_power(e, config.l1_power_start, config.l1_power_end, config.l1_power_decay_epochs) for e in epochs]
    rates = [config.learning_rate * config.lr_gamma ** (e // config.lr_step_epochs) for e in epochs]
    axes[1].step(epochs, powers, where="post", label="L1 power p")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("p")
    twin = axes[1].twinx()
    twin.step(epochs, rates, where="post", color="#7f7f7f", linestyle="--", label="learning rate")
    twin.set_yscale("log")
    twin.set_ylabel("learning rate (Adam)")
    axes[1].set_title(
        f"the paper's schedule: loss = {config.cosine_weight:g} (1 - cos) + {config.l1_weight:g} powered L1",
        fontsize=10,
    )
    lines = axes[1].get_lines() + twin.get_lines()
    axes[1].legend(lines, [line.get_label() for line in lines], fontsize=8)
    axes[1].grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=10.0, help="compression ratio (stored parameters)")
    parser.add_argument("--synthetic", action="store_true", help="a small synthetic matrix and 3 epochs (tests)")
    parser.add_argument("--output", type=Path, default=HERE, help="folder for the PNG files and figures.json")
    args = parser.parse_args(argv)

    args.output.mkdir(parents=True, exist_ok=True)
    matrix, label = synthetic_embedding() if args.synthetic else smollm2_embedding()
    start = time.perf_counter()
    results = measure(matrix, args.ratio, quick=args.synthetic)
    plot_direction(results, matrix, label, args.ratio, args.output / "direction-vs-svd.png")
    plot_loss_terms(args.output / "loss-terms.png")
    summary = {
        "command": "python docs/figures/make_figures.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:]))),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "embedding": label,
        "shape": list(matrix.shape),
        "ratio": args.ratio,
        "methods": {name: {**data["report"], "quantiles": data["quantiles"]} for name, data in results.items()},
        "total_time_s": time.perf_counter() - start,
    }
    (args.output / "figures.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, data in summary["methods"].items():
        print(
            f"{name}: k={data['code_dim']}, ratio {data['compression_ratio']:.2f}, mean cosine "
            f"{data['mean_cosine']:.4f}, p10 {data['quantiles']['p10']:.4f}, relative Frobenius error "
            f"{data['relative_frobenius_error']:.4f}, {data['wall_time_s']:.1f} s"
        )
    print(f"wrote {args.output / 'direction-vs-svd.png'}, {args.output / 'loss-terms.png'}, figures.json")
    return summary


if __name__ == "__main__":
    main()
