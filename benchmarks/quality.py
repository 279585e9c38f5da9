"""Quality at equal bytes: every method at several compression ratios on real models and real text.

    python benchmarks/quality.py [--ratios 2.5 5 10 20] [--max-tokens 8192] [--output docs/results]
    python benchmarks/quality.py --ratios 10 --max-tokens 512 --ae-epochs 1 --skip-minilm \
        --output /tmp/quality-smoke               # a smoke run: minutes, meaningless numbers

SmolLM2-135M-Instruct (tied LM head, fp32): for each ratio, transform coding (`method="transform_coding"`, with
calibration statistics from the calibration splits: token counts, and the head-input second moment and mean predicted
next-token distribution over 16,384 tokens of their documents in a seeded random order; the default 100 steps of
fitting codebooks and decoder to the original logits on 8,192 of those hidden states; data-free: the same statistics on
16,384 tokens the model generates itself, the library's default without text; random tokens: the head's metric from
random token ids only; all with the default int8 decoder), SVD and the paper's autoencoder (full published
recipe unless `--ae-epochs`) with the tied head compressed (the library's compressed model, code-space head) and
input-only (the decoded rows as input embedding, the original matrix kept as output head), and SVD with its codes
stored as int8 (per-row scales) at the same bytes. "CR" is bytes of the fp32 embedding / every byte stored for it
(codes, scales, decoder), measured on the layer's tensors. Perplexity on the recorded *test* splits of Brown and of the
Wikipedia articles
(`compressed_embeddings.assets.text_splits`), sliding windows; fidelity of the decoded matrix (mean/min row cosine,
relative Frobenius error, norm ratio, and the cosine weighted by token counts on the calibration splits). Scalar
rounding of the matrix (int8 per row, int4 / int3 in groups of 32 with one fp16 scale per group, and int3 with the rows
of the 4,096 tokens most frequent on the calibration text kept in int8, to show what frequency-aware allocation buys)
is measured beside them as the reference the issue compares against; it is applied to the matrix directly (its bytes
are counted analytically), it is not a stored format of this library.

all-MiniLM-L6-v2 (an encoder): cosine between the original's and the compressed model's mean-pooled sentence
embeddings on the Rotten Tomatoes validation sentences, per method and ratio.

Writes `quality.md`, `quality.json` and `quality.png` (perplexity ratio vs bytes, log scale) into `--output`.

    python benchmarks/quality.py --max-tokens 4096 --reuse docs/results/quality.json --recompute "transform coding"

measures only the methods whose names start with a `--recompute` prefix and takes every other row from an earlier
`quality.json` of the same settings (its command and the rows taken are recorded in the new one's `meta`), for a
change that affects one method.
"""

import argparse
import copy
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from compressed_embeddings import (
    CompressedEmbeddingConfig,
    collect_calibration,
    compress_model,
    random_token_calibration,
)
from compressed_embeddings.assets import minilm_path, rotten_tomatoes_splits, smollm2_path, text_splits
from compressed_embeddings.compress import embedding_rows
from compressed_embeddings.evaluation import embedding_fidelity, perplexity, sentence_embedding_similarity

CORPORA = ("brown", "wikipedia")


def int8_code_dim(vocab: int, hidden: int, ratio: float, decoder_bias: bool = False) -> int:
    """The largest code width k whose int8 codes (+ one fp32 scale per row) and fp32 linear decoder (SVD's has no
    bias) fit in 1/ratio of the fp32 matrix's bytes: `V k + 4 V + 4 (k d + [d]) <= 4 V d / ratio`."""
    budget = 4 * vocab * hidden / ratio - 4 * vocab - (4 * hidden if decoder_bias else 0)
    return max(1, math.floor(budget / (vocab + 4 * hidden)))


def round_groups(matrix: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Symmetric round-to-nearest with one absmax scale per `group` consecutive entries of a row."""
    rows = matrix.reshape(-1, group)
    levels = 2 ** (bits - 1) - 1
    scale = (rows.abs().amax(dim=1, keepdim=True) / levels).clamp_min(1e-12).half().float()
    return (torch.round(rows / scale).clamp(-levels, levels) * scale).reshape(matrix.shape)


SCALAR_REFERENCES = {  # name: (bits, group size, hot rows); bytes = V d bits / 8 + one fp16 scale per group
    "int8 (per row)": (8, None, 0),
    "int4 (groups of 32)": (4, 32, 0),
    "int3 (groups of 32)": (3, 32, 0),
    "int3 (groups of 32) + 4096 frequent rows int8": (3, 32, 4096),
}


CALIBRATED = "transform coding (calibrated)"
UNTIED = "transform coding (calibrated, untied copy)"
DATA_FREE = "transform coding (data-free)"
RANDOM_TOKENS = "transform coding (random tokens)"


def configs(ratio: float, vocab: int, hidden: int, ae_epochs: int | None) -> dict[str, CompressedEmbeddingConfig]:
    """The methods measured at `ratio`; the one named `CALIBRATED` is given the calibration statistics."""
    ae = {"epochs": ae_epochs} if ae_epochs else {}
    methods = {
        "svd": CompressedEmbeddingConfig(method="svd", compression_ratio=ratio),
        "autoencoder (paper)": CompressedEmbeddingConfig.preset("paper", compression_ratio=ratio, **ae),
    }
    k = int8_code_dim(vocab, hidden, ratio)
    if k < hidden:  # at low ratios int8 codes would need k >= d: nothing to compress
        methods["svd + int8 codes"] = CompressedEmbeddingConfig(method="svd", code_dim=k, codes_dtype="int8")
    for name in (RANDOM_TOKENS, DATA_FREE, CALIBRATED):
        if name == DATA_FREE and ratio < 10:  # the model's own text: minutes per row; measured where it matters
            continue
        methods[name] = CompressedEmbeddingConfig(method="transform_coding", compression_ratio=ratio)
    return methods


class LanguageModelBench:
    def __init__(self, max_tokens: int, max_length: int, stride: int) -> None:
        self.path = smollm2_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.original = self.load()
        self.matrix = self.original.get_input_embeddings().weight.detach().clone()
        splits = {corpus: text_splits(corpus) for corpus in CORPORA}
        self.test = {corpus: splits[corpus]["test"] for corpus in CORPORA}
        calibration = [doc for corpus in CORPORA for doc in splits[corpus]["calibration"]]
        start = time.perf_counter()  # token counts over all calibration text, head inputs over its first 16k tokens
        self.calibration = collect_calibration(self.original, self.tokenizer, calibration, show_progress=False)
        self.calibration_seconds = time.perf_counter() - start
        self.counts = self.calibration.token_counts
        self.settings = {"max_tokens": max_tokens, "max_length": max_length, "stride": stride}
        self.baseline = self.perplexities(self.original)

    def load(self):
        return AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()

    def perplexities(self, model) -> dict[str, float]:
        return {
            corpus: perplexity(model, self.tokenizer, texts, show_progress=False, **self.settings).perplexity
            for corpus, texts in self.test.items()
        }

    def row(
        self, name: str, head: str, target: float | None, stored_bytes: int, rows, model, seconds: float, matrices=1
    ) -> dict:
        """A table row; `matrices`: how many `V x d` matrices `stored_bytes` replaces (2: an untied input and head)."""
        fidelity = embedding_fidelity(self.matrix, rows, token_counts=self.counts).to_dict()
        ppl = self.perplexities(model)
        row = {
            "model": "SmolLM2-135M-Instruct",
            "method": name,
            "head": head,
            "target_ratio": target,
            "stored_bytes": stored_bytes,
            "ratio_vs_fp32": matrices * self.matrix.numel() * 4 / stored_bytes,
            "ratio_vs_bf16": matrices * self.matrix.numel() * 2 / stored_bytes,
            "compress_seconds": seconds,
            **fidelity,
            **{f"perplexity_{c}": ppl[c] for c in CORPORA},
            **{f"perplexity_ratio_{c}": ppl[c] / self.baseline[c] for c in CORPORA},
        }
        print(
            f"  {name:22s} {head:10s} CR {row['ratio_vs_fp32']:6.2f}  cos {fidelity['mean_cosine']:.4f}  "
            + "  ".join(f"{c} {row[f'perplexity_ratio_{c}']:.3f}x" for c in CORPORA),
            flush=True,
        )
        return row

    def compressed(self, name: str, config: CompressedEmbeddingConfig, target: float) -> list[dict]:
        model = self.load()
        start = time.perf_counter()
        # calibrated: the calibration splits; data-free: the library's own (the model's generated text, timed);
        # random tokens: the head's metric from random token ids (the data-free method before self-generation)
        calibration = {CALIBRATED: self.calibration, DATA_FREE: None}.get(name)
        if name == RANDOM_TOKENS:
            calibration = random_token_calibration(model)
        model = compress_model(model, config, show_progress=False, calibration=calibration).eval()
        seconds = time.perf_counter() - start
        stored = model.compression_report.stored_bytes
        rows = embedding_rows(model)
        tied = self.row(name, "tied", target, stored, rows, model, seconds)
        if name == CALIBRATED:
            tied["calibration_seconds"] = self.calibration_seconds
        if config.codes_dtype:  # input-only only for the plain codes: the same subspace, one variant is enough
            return [tied]
        # Input only: the decoded rows as input embedding, the original matrix kept as (untied) output head.
        plain = self.load()
        decoded = model.get_input_embeddings().weight.detach()  # the layer decodes its full matrix on demand
        plain.get_input_embeddings().weight = torch.nn.Parameter(decoded)
        plain.get_output_embeddings().weight = torch.nn.Parameter(self.matrix.clone())
        plain.config.tie_word_embeddings = False
        return [tied, self.row(name, "input-only", target, stored, decoded, plain, seconds)]

    def untied(self, name: str, config: CompressedEmbeddingConfig, target: float) -> list[dict]:
        """An untied copy of the model (its head a matrix of its own, equal to the embedding), both matrices
        compressed independently at `target` (the head with codes of its own), on the same calibration."""
        model = self.load()
        model.lm_head.weight = torch.nn.Parameter(self.matrix.clone())
        model.config.tie_word_embeddings = False
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
        start = time.perf_counter()
        model = compress_model(model, config, show_progress=False, calibration=self.calibration).eval()
        seconds = time.perf_counter() - start
        report = model.compression_report
        stored = report.stored_bytes + report.output_head.stored_bytes
        return [self.row(name, "untied: both", target, stored, embedding_rows(model), model, seconds, matrices=2)]

    def scalar(self, name: str, bits: int, group: int | None, hot_rows: int = 0) -> dict:
        """Round the matrix; with `hot_rows`, the rows of the most frequent tokens (calibration counts) are
        rounded to int8 per row instead, and their ids stored as int32."""
        vocab, hidden = self.matrix.shape
        start = time.perf_counter()
        rounded = round_groups(self.matrix, bits, group or hidden)
        hot = torch.argsort(self.counts, descending=True, stable=True)[:hot_rows]
        rounded[hot] = round_groups(self.matrix[hot], 8, hidden)
        seconds = time.perf_counter() - start
        cold = vocab - hot_rows
        stored = cold * hidden * bits // 8 + 2 * cold * hidden // (group or hidden) + hot_rows * (hidden + 2 + 4)
        model = self.load()
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(rounded)  # tied: the head reads the same matrix
        return self.row(name, "tied", None, stored, rounded, model, seconds)


def minilm_rows(ratios: list[float], ae_epochs: int | None, max_sentences: int, cached) -> list[dict]:
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    original = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    matrix = original.get_input_embeddings().weight.detach()
    sentences = [text for text, _ in rotten_tomatoes_splits()["validation"]][:max_sentences]

    def one(name: str, config: CompressedEmbeddingConfig, ratio: float) -> dict:
        # no text: an encoder cannot generate its own, so data-free is random token ids (and the methods that do not
        # calibrate ignore it)
        model = compress_model(copy.deepcopy(original), config, show_progress=False, calibration=None).eval()
        similarity = sentence_embedding_similarity(original, model, tokenizer, sentences, show_progress=False)
        report = model.compression_report
        row = {
            "model": "all-MiniLM-L6-v2",
            "method": name,
            "target_ratio": ratio,
            "ratio_vs_fp32": report.bytes_ratio_vs_fp32,
            "mean_cosine": report.mean_cosine,
            "sentence_cosine_mean": similarity["mean_cosine"],
            "sentence_cosine_min": similarity["min_cosine"],
            "num_sentences": len(sentences),
        }
        cosine = similarity["mean_cosine"]
        print(f"  MiniLM {name:22s} CR {report.bytes_ratio_vs_fp32:6.2f}  sentence cos {cosine:.4f}", flush=True)
        return row

    rows = []
    for ratio in ratios:
        for name, config in configs(ratio, *matrix.shape, ae_epochs).items():
            if name in (CALIBRATED, DATA_FREE):  # an encoder without output head: only token counts would change;
                continue  # its data-free calibration is random token ids
            rows += cached(f"minilm:{name}@{ratio}", lambda n=name, c=config, r=ratio: [one(n, c, r)])
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(results: dict) -> str:
    meta = results["meta"]
    lm = results["language_model"]
    lines = [
        "# Quality: every method at equal bytes (SmolLM2-135M, all-MiniLM-L6-v2)",
        "",
        f"Command: `{meta['command']}`  ",
        *(
            [
                f"Rows of {', '.join(meta['reused']['methods'])} taken from the earlier run `"
                f"{meta['reused']['from']}` (same settings; those methods did not change)  "
            ]
            if meta.get("reused")
            else []
        ),
        f"Machine: {meta['machine']}  ",
        f"Perplexity: test splits of Brown and of the Wikipedia articles, first {meta['max_tokens']} tokens of each, "
        f"windows of {meta['max_length']} tokens every {meta['stride']}. Original perplexity: "
        + ", ".join(f"{c} {lm['baseline'][c]:.3f}" for c in CORPORA)
        + ". Autoencoder: "
        + (f"{meta['ae_epochs']} epoch(s) (reduced)" if meta["ae_epochs"] else "the full published recipe (30 epochs)")
        + ".",
        "",
        "CR = bytes of the fp32 embedding / every byte stored for its replacement (codes, scales, codebooks, "
        "decoder). Transform coding stores at most 8 bits per entry, so where a lower ratio is asked it reaches "
        "the ratio shown instead; *calibrated* uses the calibration splits (token counts, head-input second moment, "
        "predicted distribution, then fitting to the logits); *data-free* uses no text: the model generates its own "
        "(16,384 tokens sampled from its BOS token; the same statistics and fitting; generation counted in the "
        "compress time; measured at CR 10 and above), the library's data-free default; *random tokens* takes the "
        "head's metric from random token ids only (the earlier data-free method; for MiniLM, an encoder that cannot "
        "generate, the data-free default); all use the int8 decoder. "
        "*tied*: the model's tied output head reads the compressed representation too (the library's compressed "
        "model); *input-only*: only the input embedding is replaced, the original matrix stays as output head (so "
        "the checkpoint stores the full matrix once more: it saves nothing on disk, it isolates the input side); "
        "*untied: both*: an untied copy of the model (its output head a matrix of its own, equal to the embedding) "
        "with both matrices compressed independently at the ratio, the head with codes of its own (CR counts both "
        "matrices; fidelity is the input embedding's). "
        "Scalar rows round the matrix itself (the comparison point; not a stored format of this library).",
        "",
        "| method | head | CR vs fp32 | CR vs bf16 | mean cos | min cos | freq-weighted cos | rel. Frobenius | "
        "ppl Brown (x orig) | ppl Wikipedia (x orig) | compress (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(lm["rows"], key=lambda r: (-r["ratio_vs_fp32"], r["method"], r["head"])):
        lines.append(
            f"| {row['method']} | {row['head']} | {row['ratio_vs_fp32']:.2f} | {row['ratio_vs_bf16']:.2f} | "
            f"{row['mean_cosine']:.4f} | {row['min_cosine']:.4f} | {_fmt(row['frequency_weighted_cosine'], 4)} | "
            f"{row['relative_frobenius_error']:.4f} | "
            + " | ".join(f"{row[f'perplexity_{c}']:.4g} ({row[f'perplexity_ratio_{c}']:.3g}x)" for c in CORPORA)
            + f" | {row['compress_seconds']:.1f} |"
        )
    lines += ["", "Findings (computed from the rows above):", ""]
    for ratio in meta["ratios"]:
        pair = {r["method"]: r for r in lm["rows"] if r["target_ratio"] == ratio and r["head"] == "tied"}
        if "svd" in pair and "autoencoder (paper)" in pair:
            ae, svd = pair["autoencoder (paper)"], pair["svd"]
            verdict = "≥" if ae["mean_cosine"] >= svd["mean_cosine"] else "<"
            lines.append(
                f"- CR {ratio:g}: paper autoencoder mean cosine {ae['mean_cosine']:.4f} {verdict} SVD "
                f"{svd['mean_cosine']:.4f}; Brown perplexity {ae['perplexity_ratio_brown']:.3g}x vs "
                f"{svd['perplexity_ratio_brown']:.3g}x the original (tied head)."
            )
    best = [r for r in lm["rows"] if r["ratio_vs_fp32"] >= 10 and r["head"] == "tied"]  # input-only saves nothing
    if best:
        top = min(best, key=lambda r: max(r[f"perplexity_ratio_{c}"] for c in CORPORA))
        worst = max(top[f"perplexity_ratio_{c}"] for c in CORPORA)
        lines.append(
            f"- Best at CR ≥ 10: {top['method']} ({top['head']}, CR {top['ratio_vs_fp32']:.2f}) at {worst:.3g}x the "
            f"original perplexity on the worse of the two texts; the target is ≤ 1.10x: "
            + ("met." if worst <= 1.10 else "**not met**.")
        )
    for floor, target in ((20, 1.10), (32, None)):
        high = [r for r in lm["rows"] if r["ratio_vs_fp32"] >= floor and r["head"] == "tied"]
        if high:
            top = min(high, key=lambda r: max(r[f"perplexity_ratio_{c}"] for c in CORPORA))
            worst = max(top[f"perplexity_ratio_{c}"] for c in CORPORA)
            verdict = (
                ""
                if target is None
                else f"; the target is ≤ {target:.2f}x: " + ("met." if worst <= target else "**not met**.")
            )
            lines.append(
                f"- Best at CR ≥ {floor}: {top['method']} (CR {top['ratio_vs_fp32']:.2f}) at {worst:.3g}x{verdict}"
            )
    tied = {r["target_ratio"]: r for r in lm["rows"] if r["method"] == CALIBRATED and r["head"] == "tied"}
    for row in [r for r in lm["rows"] if r["method"] == UNTIED and r["target_ratio"] in tied]:
        ratio, pair = row["target_ratio"], tied[row["target_ratio"]]
        gaps = [row[f"perplexity_ratio_{c}"] - pair[f"perplexity_ratio_{c}"] for c in CORPORA]
        lines.append(
            f"- Untied copy at CR {ratio:g} (both matrices): "
            + " / ".join(f"{row[f'perplexity_ratio_{c}']:.3f}x" for c in CORPORA)
            + " against "
            + " / ".join(f"{pair[f'perplexity_ratio_{c}']:.3f}x" for c in CORPORA)
            + f" tied (Brown / Wikipedia); largest gap {max(gaps, key=abs):+.3f}x."
        )
    for row in lm["rows"]:
        if row["method"].startswith("transform coding") and row["target_ratio"] == 10:
            text = f"- {row['method']} at CR 10: compressing took {row['compress_seconds']:.1f} s"
            if "calibration_seconds" in row and row["method"] == CALIBRATED:
                text += (
                    f" (fitting to the logits included), after {row['calibration_seconds']:.1f} s of calibration "
                    "(token counts + one forward pass)"
                )
            lines.append(text + " on this machine.")
    if results.get("minilm"):
        lines += [
            "",
            "## all-MiniLM-L6-v2: sentence embeddings",
            "",
            f"Cosine between the original's and the compressed model's mean-pooled sentence embeddings, "
            f"{results['minilm'][0]['num_sentences']} Rotten Tomatoes validation sentences.",
            "",
            "| method | CR vs fp32 | row mean cos | sentence cos (mean) | sentence cos (min) |",
            "|---|---|---|---|---|",
        ]
        for row in sorted(results["minilm"], key=lambda r: (-r["ratio_vs_fp32"], r["method"])):
            lines.append(
                f"| {row['method']} | {row['ratio_vs_fp32']:.2f} | {row['mean_cosine']:.4f} | "
                f"{row['sentence_cosine_mean']:.4f} | {row['sentence_cosine_min']:.4f} |"
            )
    lines += ["", "![Perplexity vs bytes](quality.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    lm = results["language_model"]
    fig, axes = plt.subplots(1, len(CORPORA), figsize=(11, 4.2), sharey=True)
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in lm["rows"]:
        groups.setdefault((row["method"], row["head"]), []).append(row)
    for ax, corpus in zip(axes, CORPORA):
        for (method, head), rows in sorted(groups.items()):
            rows = sorted(rows, key=lambda r: r["stored_bytes"])
            marker = "s" if rows[0]["target_ratio"] is None else "o"
            ax.plot(
                [r["stored_bytes"] / 2**20 for r in rows],
                [r[f"perplexity_ratio_{corpus}"] for r in rows],
                marker=marker,
                linestyle="-" if head == "tied" else "--",
                label=f"{method} ({head})",
            )
        ax.set_xscale("log")
        ax.set_xticks([2, 4, 8, 16, 32, 64])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.axhline(1.10, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{corpus} test")
        ax.set_xlabel("MiB stored for the embedding (log)")
    axes[0].set_ylabel("perplexity / original (log)")
    axes[-1].legend(fontsize=7)
    fig.suptitle("SmolLM2-135M: perplexity vs bytes (dotted: 1.10x)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[2.5, 5, 10, 20, 32])
    parser.add_argument("--max-tokens", type=int, default=8192, help="Tokens of each test text scored.")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--ae-epochs", type=int, default=None, help="Fewer autoencoder epochs (smoke runs).")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--max-sentences", type=int, default=852)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results")
    parser.add_argument("--work", type=Path, default=Path("outputs") / "quality", help="Resume cache of rows.")
    parser.add_argument("--render-only", action="store_true", help="Re-write quality.md and .png from quality.json.")
    parser.add_argument("--reuse", type=Path, help="An earlier quality.json whose rows are taken, except ...")
    parser.add_argument("--recompute", nargs="+", default=[], help="... those of methods starting with these.")
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads((args.output / "quality.json").read_text())
        plot(results, args.output / "quality.png")
        (args.output / "quality.md").write_text(render(results))
        return 0
    torch.manual_seed(0)
    command = "python benchmarks/quality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "ratios": args.ratios,
        "ae_epochs": args.ae_epochs,
        **{k: getattr(args, k) for k in ("max_tokens", "max_length", "stride")},
    }
    print("SmolLM2-135M-Instruct", flush=True)
    bench = LanguageModelBench(args.max_tokens, args.max_length, args.stride)
    settings = {k: meta[k] for k in ("max_tokens", "max_length", "stride", "ae_epochs")}
    reused = _reusable_rows(args.reuse, settings) if args.reuse else None
    reused_ratios = reused.pop("ratios") if reused is not None else []
    if reused is not None:
        meta["reused"] = {"from": reused.pop("command"), "methods": []}

    def cached(key: str, compute) -> list[dict]:
        """Rows already measured with these settings are read back from `--work` (an interrupted run resumes), or
        taken from `--reuse` for the methods not recomputed."""
        name = key.removeprefix("minilm:").split("@")[0]
        measured = "@" not in key or float(key.split("@")[1]) in reused_ratios  # a new ratio is measured now
        if reused is not None and not name.startswith(tuple(args.recompute)) and measured:
            if key not in reused:
                raise SystemExit(f"--reuse {args.reuse} has no rows for {key!r}: recompute it or drop --reuse.")
            if name not in meta["reused"]["methods"]:
                meta["reused"]["methods"].append(name)
            return reused[key]
        # a method whose meaning changed gets new cache entries (data-free: self-generated text since 2026-12)
        variant = {DATA_FREE: "self-generated"}.get(name)
        fields = {"key": key, **settings, **({"variant": variant} if variant else {})}
        tag = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        path = args.work / f"{tag}.json"
        if path.exists():
            return json.loads(path.read_text())
        rows = compute()
        args.work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows))
        return rows

    rows = []
    for name, spec in SCALAR_REFERENCES.items():
        rows += cached(name, lambda name=name, spec=spec: [bench.scalar(name, *spec)])
    for ratio in args.ratios:
        print(f"CR {ratio:g}", flush=True)
        for name, config in configs(ratio, *bench.matrix.shape, args.ae_epochs).items():
            rows += cached(f"{name}@{ratio}", lambda n=name, c=config, r=ratio: bench.compressed(n, c, r))
        if ratio >= 10:  # an untied model: both matrices, each at the ratio (the head with codes of its own)
            config = CompressedEmbeddingConfig(method="transform_coding", compression_ratio=ratio)
            rows += cached(f"{UNTIED}@{ratio}", lambda c=config, r=ratio: bench.untied(UNTIED, c, r))
    results = {"meta": meta, "language_model": {"baseline": bench.baseline, "rows": rows}}
    if not args.skip_minilm:
        print("all-MiniLM-L6-v2", flush=True)
        results["minilm"] = minilm_rows(args.ratios, args.ae_epochs, args.max_sentences, cached)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.output / "quality.png")
    (args.output / "quality.md").write_text(render(results))
    print(f"Wrote {args.output / 'quality.md'}")
    return 0


def _reusable_rows(path: Path, settings: dict) -> dict:
    """The rows of an earlier quality.json by the `cached` key they were measured under, and its command; refused
    unless it was measured with the same settings."""
    earlier = json.loads(path.read_text())
    mismatched = {k: (earlier["meta"].get(k), v) for k, v in settings.items() if earlier["meta"].get(k) != v}
    if mismatched:
        raise SystemExit(f"--reuse {path} was measured with other settings (earlier, now): {mismatched}")
    # rows the earlier run itself took from a run before it keep that run's command (this run reuses only those)
    rows: dict = {"command": earlier["meta"].get("reused", {}).get("from", earlier["meta"]["command"])}
    rows["ratios"] = earlier["meta"]["ratios"]
    for row in earlier["language_model"]["rows"]:
        key = row["method"] if row["target_ratio"] is None else f"{row['method']}@{row['target_ratio']}"
        rows.setdefault(key, []).append(row)
    for row in earlier.get("minilm", []):
        rows.setdefault(f"minilm:{row['method']}@{row['target_ratio']}", []).append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
