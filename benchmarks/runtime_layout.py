"""What the runtime layout of packed codes changes in a model's output: the tied head's log-likelihood of real text
through the int8 / int4 kernels (bf16 activations) and through the other paths, against the exact product.

    python benchmarks/runtime_layout.py [--ratios 10 20] [--max-tokens 16384] [--output docs/results]

SmolLM2-135M-Instruct in float32 and in bfloat16, transform coding (`preset("transform_coding")`, calibrated on the
Brown calibration split as a user would, 16,384 tokens) at each ratio. The first `--max-tokens` tokens of the Brown
*test* split, in windows of 512 tokens, run once through the compressed model's layers; the final hidden states then
go through its tied head three ways, and each gives the perplexity of the next tokens:
- *kernels*: 16 positions per call, as `generate` calls the head (one position per step): the codes' grid positions
  as int8 / int4 matrices through PyTorch's weight-only kernels, bf16 activations (the default);
- *chunks*: all 512 positions per call, as scoring and training call it: chunks of the integers expanded to bf16;
- *exact*: `runtime_mode="exact"`, the same integers multiplied in the model's dtype (what decoding every row
  would give, without building them).
Also the original model's perplexity on the same windows, and the embedding's bytes per row, stored and while running.
Writes `runtime-layout.md` and `.json` into `--output`.
"""

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compressed_embeddings import CompressedEmbeddingConfig, collect_calibration, compress_model
from compressed_embeddings.assets import smollm2_path, text_splits
from compressed_embeddings.texts import DOCUMENT_SEPARATOR

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WINDOW = 512
KERNEL_POSITIONS = 16


def windows(tokenizer, texts: list[str], max_tokens: int) -> list[torch.Tensor]:
    ids = torch.as_tensor(tokenizer(DOCUMENT_SEPARATOR.join(texts), verbose=False)["input_ids"])[:max_tokens]
    return [ids[start : start + WINDOW].unsqueeze(0) for start in range(0, len(ids) - 1, WINDOW)]


@torch.no_grad()
def perplexities(model, batches: list[torch.Tensor], ways: dict) -> dict[str, float]:
    """Perplexity of the windows' next tokens, the hidden states computed once and the head called each way
    (`name: (runtime_mode, positions per call)`; `None`: the model's own forward)."""
    targets = [ids[0, 1:] for ids in batches]
    count = sum(t.numel() for t in targets)
    hidden = [model.base_model(input_ids=ids).last_hidden_state[:, :-1] for ids in batches]
    head = model.get_output_embeddings()
    result = {}
    for name, way in ways.items():
        total = 0.0
        for ids, states, target in zip(batches, hidden, targets):
            if way is None:
                logits = model(input_ids=ids).logits[0, :-1]
            else:
                mode, positions = way
                model.get_input_embeddings().runtime_mode = mode
                parts = [head(states[:, s : s + positions]) for s in range(0, states.shape[1], positions)]
                logits = torch.cat(parts, dim=1)[0]
            total += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
        result[name] = math.exp(total / count)
    if hasattr(model.get_input_embeddings(), "runtime_mode"):
        model.get_input_embeddings().runtime_mode = "kernels"
    return result


def measure(ratios: list[float], max_tokens: int) -> list[dict]:
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    splits = text_splits("brown")
    batches = windows(tokenizer, splits["test"], max_tokens)
    ways = {"kernels": ("kernels", KERNEL_POSITIONS), "chunks": ("kernels", WINDOW), "exact": ("exact", WINDOW)}
    rows = []
    for dtype, torch_dtype in DTYPES.items():
        original = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
        calibration = collect_calibration(original, tokenizer, splits["calibration"], show_progress=False)
        baseline = perplexities(original, batches, {"original": None})["original"]
        for ratio in ratios:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=ratio)
            model = compress_model(model, config, calibration=calibration, show_progress=False).eval()
            report = model.compression_report
            scores = perplexities(model, batches, ways)
            row = {
                "dtype": dtype,
                "target_ratio": ratio,
                "bytes_ratio": report.bytes_ratio,
                "stored_bytes_per_row": report.stored_bytes / report.num_embeddings,
                "runtime_bytes_per_row": report.runtime_bytes / report.num_embeddings,
                "original_bytes_per_row": report.original_bytes / report.num_embeddings,
                "perplexity_original": baseline,
                **{f"perplexity_{name}": value for name, value in scores.items()},
                "kernels_vs_exact": scores["kernels"] / scores["exact"],
                "chunks_vs_exact": scores["chunks"] / scores["exact"],
            }
            print(
                f"[{time.strftime('%H:%M:%S')}] {dtype} CR {ratio:g}: ppl {baseline:.3f} original; "
                + ", ".join(f"{name} {value:.3f}" for name, value in scores.items()),
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# The runtime layout of packed codes: what it changes in the output",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        "SmolLM2-135M-Instruct (the dequantised GGUF weights the package ships), transform coding calibrated on the "
        f"Brown calibration split; the first {meta['max_tokens']} tokens of the Brown test split in windows of "
        f"{WINDOW}, the hidden states computed once and the tied head applied three ways: *kernels*, "
        f"{KERNEL_POSITIONS} positions per call as `generate` uses it (int8 / int4 weight-only kernels, bf16 "
        f"activations; the default); *chunks*, {WINDOW} positions per call as scoring and training use it (chunks of "
        "the integers expanded to bf16); *exact*, the same integers multiplied in the model's dtype "
        '(`model.get_input_embeddings().runtime_mode = "exact"`), what decoding every row would give.',
        "",
        "| model dtype | CR (bytes, model dtype) | embedding bytes per row: original / stored / running | "
        "ppl original | ppl kernels | ppl chunks | ppl exact | kernels / exact | chunks / exact |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dtype']} | {row['bytes_ratio']:.2f} | {row['original_bytes_per_row']:.0f} / "
            f"{row['stored_bytes_per_row']:.0f} / {row['runtime_bytes_per_row']:.0f} | "
            f"{row['perplexity_original']:.3f} | {row['perplexity_kernels']:.3f} | {row['perplexity_chunks']:.3f} | "
            f"{row['perplexity_exact']:.3f} | {row['kernels_vs_exact']:.4f}x | {row['chunks_vs_exact']:.4f}x |"
        )
    worst = max(abs(row[key] - 1) for row in rows for key in ("kernels_vs_exact", "chunks_vs_exact"))
    lines += [
        "",
        f"Largest change of perplexity from the bf16 arithmetic of the runtime layout: {100 * worst:.3f} % "
        f"({'within' if worst <= 0.005 else 'above'} 0.5 %).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[10.0, 20.0])
    parser.add_argument("--max-tokens", type=int, default=16384, help="Tokens of the test split scored.")
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
    rows = measure(args.ratios, args.max_tokens)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "runtime-layout.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.output / "runtime-layout.md").write_text(render(meta, rows))
    print(render(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
