"""What the runtime layout of packed codes changes in a model's output: perplexity from the int8 / int4 kernels
(bf16 activations) against the decoded path, on real text.

    python benchmarks/runtime_layout.py [--ratios 10 20] [--max-tokens 16384] [--output docs/results]

SmolLM2-135M-Instruct in float32 and in bfloat16, transform coding (`preset("transform_coding")`, calibrated on the
Brown calibration split as a user would, 16,384 tokens) at each ratio. Perplexity on the first `--max-tokens` tokens
of the Brown *test* split (sliding windows of 512 every 256 tokens; 0: every token) three ways: the original model;
the compressed model with its tied head on the runtime layout (`runtime_mode="kernels"`, the default: grid positions
as int8 / int4 matrices through PyTorch's weight-only kernels, bf16 activations); and the same model with the head
multiplying in the model's own dtype (`runtime_mode="exact"`: what decoding every row would give, without building
them). Also the embedding's bytes per row, stored and while running. Writes `runtime-layout.md` and `.json` into
`--output`.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compressed_embeddings import CompressedEmbeddingConfig, collect_calibration, compress_model
from compressed_embeddings.assets import smollm2_path, text_splits
from compressed_embeddings.evaluation import perplexity

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def measure(ratios: list[float], max_tokens: int | None) -> list[dict]:
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    splits = text_splits("brown")
    rows = []
    for dtype, torch_dtype in DTYPES.items():
        original = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
        calibration = collect_calibration(original, tokenizer, splits["calibration"], show_progress=False)

        def score(model) -> float:
            result = perplexity(model, tokenizer, splits["test"], max_tokens=max_tokens, show_progress=False)
            return result.perplexity

        baseline = score(original)
        for ratio in ratios:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=ratio)
            model = compress_model(model, config, calibration=calibration, show_progress=False).eval()
            report = model.compression_report
            head = model.get_output_embeddings()
            scores = {}
            for mode in ("kernels", "exact"):
                head.embedding.runtime_mode = mode
                scores[mode] = score(model)
            row = {
                "dtype": dtype,
                "target_ratio": ratio,
                "bytes_ratio": report.bytes_ratio,
                "stored_bytes_per_row": report.stored_bytes / report.num_embeddings,
                "runtime_bytes_per_row": report.runtime_bytes / report.num_embeddings,
                "original_bytes_per_row": report.original_bytes / report.num_embeddings,
                "perplexity_original": baseline,
                "perplexity_kernels": scores["kernels"],
                "perplexity_exact": scores["exact"],
                "kernels_vs_exact": scores["kernels"] / scores["exact"],
            }
            print(
                f"[{time.strftime('%H:%M:%S')}] {dtype} CR {ratio:g}: ppl {baseline:.3f} original, "
                f"{scores['kernels']:.3f} runtime layout, {scores['exact']:.3f} exact "
                f"({row['kernels_vs_exact']:.4f}x)",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def render(meta: dict, rows: list[dict]) -> str:
    tokens = "every token" if not meta["max_tokens"] else f"the first {meta['max_tokens']} tokens"
    lines = [
        "# The runtime layout of packed codes: what it changes in the output",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        "SmolLM2-135M-Instruct (the dequantised GGUF weights the package ships), transform coding calibrated on the "
        f"Brown calibration split; perplexity on {tokens} of the Brown test split (windows of 512 every 256). "
        "*runtime layout*: the tied head multiplies the codes' grid positions as int8 / int4 matrices with "
        "PyTorch's weight-only kernels, bf16 activations (the default); *exact*: the same codes multiplied in the "
        "model's dtype (`model.get_input_embeddings().runtime_mode = \"exact\"`), what decoding every row would "
        "give.",
        "",
        "| model dtype | CR (bytes, model dtype) | embedding bytes per row: original / stored / running | "
        "ppl original | ppl runtime layout | ppl exact | runtime / exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dtype']} | {row['bytes_ratio']:.2f} | {row['original_bytes_per_row']:.0f} / "
            f"{row['stored_bytes_per_row']:.0f} / {row['runtime_bytes_per_row']:.0f} | "
            f"{row['perplexity_original']:.3f} | {row['perplexity_kernels']:.3f} | {row['perplexity_exact']:.3f} | "
            f"{row['kernels_vs_exact']:.4f}x |"
        )
    worst = max(abs(row["kernels_vs_exact"] - 1) for row in rows)
    lines += [
        "",
        f"Largest change of perplexity from the kernels' bf16 activations: {100 * worst:.2f} % "
        f"({'within' if worst <= 0.005 else 'above'} 0.5 %).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[10.0, 20.0])
    parser.add_argument("--max-tokens", type=int, default=16384, help="Tokens of the test split scored (0: all).")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    if args.render_only:
        saved = json.loads((args.output / "runtime-layout.json").read_text())
        (args.output / "runtime-layout.md").write_text(render(saved["meta"], saved["rows"]))
        return 0
    torch.manual_seed(0)
    command = "python benchmarks/runtime_layout.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "max_tokens": args.max_tokens,
    }
    rows = measure(args.ratios, args.max_tokens or None)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "runtime-layout.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.output / "runtime-layout.md").write_text(render(meta, rows))
    print(render(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
