"""The bytes of a compressed embedding on a torchao weight-only quantised body, against the original model.

    python benchmarks/quantised_bodies.py [--dtypes bfloat16 float32] [--ratio 10] [--max-tokens 4096]
        [--work outputs/quantised-bodies] [--output docs/results]

SmolLM2-135M-Instruct (the dequantised GGUF weights the package ships) in each `--dtypes` dtype, its embedding either
kept or compressed by transform coding at `--ratio` (the default method; ratio against the embedding's bytes in that
dtype; calibrated on the Brown calibration split), its body either kept or quantised weight-only by torchao through
`TorchAoConfig` at load time, as docs/guides/quantised-bodies.md does: int8 (`Int8WeightOnlyConfig()`, one scale per
output row) or int4 (`IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))`, the int4 weight-only
config torchao 0.18 runs on the CPU, which stores each 4-bit value in an int8 byte). Each model is saved with
`save_pretrained`, and its `model.safetensors` is read tensor by tensor: the embedding (codes, codebooks and decoder,
or the dense matrix), the body's linear layers (quantised values, scales, zero points), and the rest (norms). For int4
the body's bytes are also computed as a packed 4-bit format stores them (two values per byte, same scales and zero
points), which torchao's CPU config does not write. Each saved model is then loaded back (package imported) and
scored: the perplexity of the first `--max-tokens` tokens of the Brown test split in windows of 512.

Writes `quantised-bodies.md` and `quantised-bodies.json` into `--output`.
"""

import argparse
import json
import math
import platform
import struct
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

import compressed_embeddings  # noqa: F401  (registers the compressed classes for the reloads)
from compressed_embeddings import CompressedEmbeddingConfig, collect_calibration, compress_model
from compressed_embeddings.assets import smollm2_path, text_splits
from compressed_embeddings.texts import DOCUMENT_SEPARATOR

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WINDOW = 512
#: The prefixes of the tensors a Llama-style checkpoint stores for its token embedding (and an untied head).
EMBEDDING_PREFIXES = ("model.embed_tokens.", "lm_head.")
BODY_LINEAR = ("_proj.",)


def quantisers() -> dict:
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup

    return {
        "none": None,
        "int8": Int8WeightOnlyConfig(),
        "int4": IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
    }


def safetensors_bytes(path: Path) -> dict[str, tuple[str, int]]:
    """Each tensor of a safetensors file: its dtype and its bytes (from the header, without loading it)."""
    with open(path, "rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(size))
    return {
        name: (entry["dtype"], entry["data_offsets"][1] - entry["data_offsets"][0])
        for name, entry in header.items()
        if name != "__metadata__"
    }


def component_bytes(tensors: dict[str, tuple[str, int]]) -> dict[str, int]:
    """Bytes of the embedding, of the body's linear layers (and, for int4 stored one value per byte, what packing
    two values per byte would leave of them), and of the rest, from `safetensors_bytes`."""
    parts = {"embedding": 0, "body_linear": 0, "body_linear_packed_int4": 0, "other": 0}
    for name, (dtype, size) in tensors.items():
        if name.startswith(EMBEDDING_PREFIXES):
            parts["embedding"] += size
        elif any(marker in name for marker in BODY_LINEAR):
            parts["body_linear"] += size
            # torchao's flattened IntxUnpackedToInt8Tensor: `<param>_qdata` holds the int4 values in int8 bytes
            parts["body_linear_packed_int4"] += size // 2 if name.endswith("_qdata") and dtype == "I8" else size
        else:
            parts["other"] += size
    parts["total"] = parts["embedding"] + parts["body_linear"] + parts["other"]
    return parts


def windows(tokenizer, texts: list[str], max_tokens: int) -> list[torch.Tensor]:
    ids = torch.as_tensor(tokenizer(DOCUMENT_SEPARATOR.join(texts), verbose=False)["input_ids"])[:max_tokens]
    return [ids[start : start + WINDOW].unsqueeze(0) for start in range(0, len(ids) - 1, WINDOW)]


@torch.no_grad()
def perplexity(model, batches: list[torch.Tensor]) -> float:
    total, count = 0.0, 0
    for ids in batches:
        logits = model(input_ids=ids).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(total / count)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(dtypes: list[str], ratio: float, max_tokens: int, work: Path) -> list[dict]:
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    splits = text_splits("brown")
    batches = windows(tokenizer, splits["test"], max_tokens)
    rows = []
    for dtype in dtypes:
        torch_dtype = DTYPES[dtype]
        sources = {"original": work / f"original-{dtype}", "compressed": work / f"compressed-{dtype}-cr{ratio:g}"}
        if not (sources["original"] / "config.json").exists():
            AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).save_pretrained(sources["original"])
        if not (sources["compressed"] / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
            calibration = collect_calibration(model, tokenizer, splits["calibration"], show_progress=False)
            config = CompressedEmbeddingConfig(compression_ratio=ratio)
            model = compress_model(model, config, calibration=calibration, show_progress=False)
            model.save_pretrained(sources["compressed"])
            log(f"{dtype}: compressed at ratio {ratio:g} ({model.compression_report.bytes_ratio:.2f} in bytes)")
        for body, quant_type in quantisers().items():
            for embedding, source in sources.items():
                saved = work / f"{embedding}-{dtype}-{body}"
                kwargs = {} if quant_type is None else {"quantization_config": TorchAoConfig(quant_type)}
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
                model.save_pretrained(saved)
                del model
                parts = component_bytes(safetensors_bytes(saved / "model.safetensors"))
                reloaded = AutoModelForCausalLM.from_pretrained(saved).eval()
                layer = reloaded.model.layers[0].self_attn.q_proj.weight
                row = {
                    "dtype": dtype,
                    "embedding": embedding,
                    "body": body,
                    "body_weight_type": type(layer).__name__,
                    "embedding_class": type(reloaded.get_input_embeddings()).__name__,
                    "file_bytes": (saved / "model.safetensors").stat().st_size,
                    **{f"{name}_bytes": value for name, value in parts.items()},
                    "perplexity": perplexity(reloaded, batches) if max_tokens else None,
                }
                del reloaded
                rows.append(row)
                log(
                    f"{dtype} {embedding} embedding, body {body}: {row['total_bytes'] / 2**20:.1f} MiB "
                    f"(embedding {row['embedding_bytes'] / 2**20:.1f}), perplexity {row['perplexity']}"
                )
    return rows


def mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Quantised bodies: the bytes of a compressed embedding on a torchao weight-only body",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torchao {meta['torchao']}, transformers {meta['transformers']}  ",
        "SmolLM2-135M-Instruct (the dequantised GGUF weights the package ships; vocabulary 49,152 x 576, tied head), "
        f"its embedding kept or compressed by transform coding at ratio {meta['ratio']:g} (of the embedding's bytes "
        "in the model's dtype; calibrated on the Brown calibration split), its body kept or quantised weight-only by "
        "torchao through `TorchAoConfig` at load time: int8 (`Int8WeightOnlyConfig()`) or int4 "
        "(`IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))`). Bytes are those of each saved "
        "`model.safetensors`, tensor by tensor (MiB). torchao's int4 config for the CPU stores each 4-bit value in "
        "an int8 byte: *packed int4* is what the same body takes with two values per byte (computed from the file: "
        "values halved, scales and zero points kept), as packed int4 formats store it. Perplexity: each saved model "
        f"loaded back, the first {meta['max_tokens']} tokens of the Brown test split in windows of {WINDOW}.",
        "",
        "| dtype | embedding | body | embedding MiB | body linear MiB | body linear MiB, packed int4 | other MiB | "
        "total MiB | total, packed int4 | vs original | embedding share | perplexity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype in dict.fromkeys(row["dtype"] for row in rows):
        original = next(
            r for r in rows if r["dtype"] == dtype and r["embedding"] == "original" and r["body"] == "none"
        )
        for row in (r for r in rows if r["dtype"] == dtype):
            packed = row["total_bytes"] - row["body_linear_bytes"] + row["body_linear_packed_int4_bytes"]
            is_int4 = row["body"] == "int4"
            ppl = "" if row["perplexity"] is None else f"{row['perplexity']:.3f}"
            lines.append(
                f"| {dtype} | {row['embedding']} | {row['body']} | {mib(row['embedding_bytes'])} | "
                f"{mib(row['body_linear_bytes'])} | {mib(row['body_linear_packed_int4_bytes']) if is_int4 else ''} | "
                f"{mib(row['other_bytes'])} | {mib(row['total_bytes'])} | {mib(packed) if is_int4 else ''} | "
                f"{(packed if is_int4 else row['total_bytes']) / original['total_bytes']:.3f}x | "
                f"{row['embedding_bytes'] / (packed if is_int4 else row['total_bytes']):.1%} | {ppl} |"
            )
    lines += [
        "",
        "*vs original* and *embedding share* use the packed int4 total for int4 bodies, the file's total otherwise.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bfloat16", "float32"])
    parser.add_argument("--ratio", type=float, default=10.0, help="Compression ratio of the embedding (10).")
    parser.add_argument("--max-tokens", type=int, default=4096, help="Tokens scored for perplexity (0: none).")
    parser.add_argument("--work", type=Path, default=Path("outputs/quantised-bodies"), help="Saved models.")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results")
    parser.add_argument("--render-only", action="store_true", help="Rewrite the .md from the saved .json.")
    args = parser.parse_args(argv)
    if args.render_only:
        saved = json.loads((args.output / "quantised-bodies.json").read_text())
        (args.output / "quantised-bodies.md").write_text(render(saved["meta"], saved["rows"]))
        return 0
    import torchao
    import transformers

    command = "python benchmarks/quantised_bodies.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "torchao": torchao.__version__,
        "transformers": transformers.__version__,
        "ratio": args.ratio,
        "max_tokens": args.max_tokens,
    }
    rows = measure(args.dtypes, args.ratio, args.max_tokens, args.work)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "quantised-bodies.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.output / "quantised-bodies.md").write_text(render(meta, rows))
    print(render(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
