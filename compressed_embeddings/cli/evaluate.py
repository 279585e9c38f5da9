"""`compressed-embeddings evaluate`: perplexity on texts, and the fidelity of an embedding to the original's.

Works on original and compressed checkpoints alike; with `--reference ORIGINAL`, the same perplexities for the
original, their ratio, and the embedding's fidelity (row cosines, relative error, norm ratio, the cosine weighted by
token counts on the texts).
"""

import argparse
import json
from pathlib import Path

from .common import CommandError, add_dtype_argument, load_model


def evaluate_command_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="Perplexity on texts and embedding fidelity against the original (original or compressed models).",
        description=(
            "Causal-LM perplexity of MODEL on each --text source (sliding windows), and, with --reference, the same "
            "for the reference model, the perplexity ratio and the fidelity of MODEL's input embedding to the "
            "reference's (mean/min row cosine, relative Frobenius error, norm ratio, and the cosine weighted by "
            "token counts on the texts). Works on original and compressed checkpoints alike."
        ),
    )
    parser.add_argument("model", help="Model folder or Hub id (compressed or not).")
    parser.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="SOURCE",
        help="A .txt/.jsonl/.json file, a folder of .txt files, or a Hub dataset 'name[:config]'; repeatable.",
    )
    parser.add_argument("--split", default="test", help="Split of a Hub dataset source (default: test).")
    parser.add_argument("--text-column", default="text", help="Field holding the text in JSON/dataset records.")
    parser.add_argument("--reference", help="The original model, to compare against (folder or Hub id).")
    parser.add_argument("--max-tokens", type=int, default=None, help="Score only the first N tokens of each text.")
    parser.add_argument("--max-length", type=int, default=512, help="Window length in tokens (default: 512).")
    parser.add_argument("--stride", type=int, default=256, help="Window stride in tokens (default: 256).")
    parser.add_argument("--batch-size", type=int, default=4, help="Windows per forward pass (default: 4).")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of MODEL.")
    add_dtype_argument(parser, "MODEL and the reference")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON to FILE.")
    parser.add_argument("--allow-pickle", action="store_true", help="Accept pickle weights (trusted sources only).")
    parser.set_defaults(func=evaluate_command)
    return parser


def evaluate_command(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ..compress import embedding_rows
    from ..evaluation import embedding_fidelity, perplexity
    from ..texts import load_texts, token_frequencies

    if not args.text and not args.reference:
        raise CommandError("Nothing to evaluate: pass --text SOURCE (perplexity) and/or --reference MODEL (fidelity).")
    texts = {}
    for source in args.text:
        try:
            texts[source] = load_texts(source, split=args.split, text_column=args.text_column)
        except (OSError, ValueError, KeyError) as error:
            raise CommandError(f"Could not read --text {source}: {error}") from None
    auto_class = "AutoModelForCausalLM" if texts else None
    models = {"model": load_model(args.model, args.revision, args.allow_pickle, auto_class, args.dtype)}
    if args.reference:
        models["reference"] = load_model(args.reference, None, args.allow_pickle, auto_class, args.dtype)
        if callable(embedding_rows(models["reference"])):
            raise CommandError(f"--reference {args.reference} is itself compressed: pass the original model.")
    tokenizer = AutoTokenizer.from_pretrained(args.reference or args.model) if texts else None
    results: dict = {"model": args.model, "reference": args.reference, "perplexity": {}}
    for source, documents in texts.items():
        entry = {}
        for role, model in models.items():
            result = perplexity(
                model,
                tokenizer,
                documents,
                max_length=args.max_length,
                stride=args.stride,
                batch_size=args.batch_size,
                max_tokens=args.max_tokens,
            )
            entry[role] = result.to_dict()
        if "reference" in entry:
            entry["ratio"] = entry["model"]["perplexity"] / entry["reference"]["perplexity"]
        results["perplexity"][source] = entry
        line = f"{source}: perplexity {entry['model']['perplexity']:.3f} ({entry['model']['num_tokens']} tokens)"
        if "ratio" in entry:
            line += f", reference {entry['reference']['perplexity']:.3f}, ratio {entry['ratio']:.4f}x"
        print(line)
    if args.reference:
        original = embedding_rows(models["reference"])
        counts = None
        if texts:
            documents = [doc for docs in texts.values() for doc in docs]
            counts = token_frequencies(tokenizer, documents, original.shape[0], show_progress=False)
        report = embedding_fidelity(original, embedding_rows(models["model"]), token_counts=counts)
        results["fidelity"] = report.to_dict()
        print("fidelity: " + ", ".join(f"{k} {v:.4f}" for k, v in report.to_dict().items() if v is not None))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0
