"""`compressed-embeddings evaluate`: perplexity on texts, lm-evaluation-harness tasks, and the fidelity of an embedding
to the original's.

Works on original and compressed checkpoints alike; with `--reference ORIGINAL`, the same perplexities and task
scores for the original, the perplexity ratio, and the embedding's fidelity (row cosines, relative error, norm ratio,
the cosine weighted by token counts on the texts).
"""

import argparse
import json
from pathlib import Path

from .common import CommandError, add_dtype_argument, load_model


def _limit(text: str) -> int | float:
    """--lm-eval-limit: a number of documents (an int, as lm-eval counts them) or, below 1, a share."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return int(value) if value >= 1 else value


def evaluate_command_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="Perplexity on texts and embedding fidelity against the original (original or compressed models).",
        description=(
            "Causal-LM perplexity of MODEL on each --text source (sliding windows), and, with --reference, the same "
            "for the reference model, the perplexity ratio and the fidelity of MODEL's input embedding to the "
            "reference's (mean/min row cosine, relative Frobenius error, norm ratio, and the cosine weighted by "
            "token counts on the texts). With --lm-eval, scores on lm-evaluation-harness tasks (for MODEL and the "
            "reference). Works on original and compressed checkpoints alike."
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
    parser.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="Comma-separated lm-evaluation-harness tasks to score MODEL (and the reference) on "
        "(needs lm-eval: pip install 'compressed-embeddings[lm-eval]').",
    )
    parser.add_argument(
        "--lm-eval-include",
        metavar="DIR",
        help="A folder of task YAML files of your own for --lm-eval (lm-eval's --include_path), e.g. over local text.",
    )
    parser.add_argument(
        "--lm-eval-limit",
        type=_limit,
        help="At most N documents per --lm-eval task (below 1: that share); a quick look.",
    )
    parser.add_argument(
        "--lm-eval-fewshot", type=int, help="Few-shot examples per --lm-eval prompt (default: the task's)."
    )
    parser.add_argument("--split", default="test", help="Split of a Hub dataset source (default: test).")
    parser.add_argument("--text-column", default="text", help="Field holding the text in JSON/dataset records.")
    parser.add_argument("--reference", help="The original model, to compare against (folder or Hub id).")
    parser.add_argument("--max-tokens", type=int, default=None, help="Score only the first N tokens of each text.")
    parser.add_argument("--max-length", type=int, default=512, help="Window length in tokens (default: 512).")
    parser.add_argument("--stride", type=int, default=256, help="Window stride in tokens (default: 256).")
    parser.add_argument(
        "--batch-size", type=int, default=4, help="Windows (--lm-eval: requests) per forward pass (default: 4)."
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of MODEL.")
    add_dtype_argument(parser, "MODEL and the reference")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON to FILE.")
    parser.add_argument("--allow-pickle", action="store_true", help="Accept pickle weights (trusted sources only).")
    parser.set_defaults(func=evaluate_command)
    return parser


def evaluate_command(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ..compress import embedding_rows
    from ..evaluation import LM_EVAL_MISSING, embedding_fidelity, lm_eval_scores, perplexity
    from ..texts import load_texts, token_frequencies

    if args.lm_eval_include and not args.lm_eval:
        raise CommandError("--lm-eval-include adds task files for --lm-eval TASKS: pass the tasks to run.")
    if not args.text and not args.reference and not args.lm_eval:
        raise CommandError(
            "Nothing to evaluate: pass --text SOURCE (perplexity), --lm-eval TASKS (lm-evaluation-harness) and/or "
            "--reference MODEL (fidelity)."
        )
    if args.lm_eval:
        try:
            import lm_eval  # noqa: F401  (checked before any model is loaded)
        except ImportError:
            raise CommandError(f"--lm-eval: {LM_EVAL_MISSING}") from None
        if args.lm_eval_include and not Path(args.lm_eval_include).is_dir():
            raise CommandError(f"--lm-eval-include {args.lm_eval_include}: no such folder.")
    texts = {}
    for source in args.text:
        try:
            texts[source] = load_texts(source, split=args.split, text_column=args.text_column)
        except (OSError, ValueError, KeyError) as error:
            raise CommandError(f"Could not read --text {source}: {error}") from None
    causal = bool(texts) or bool(args.lm_eval)
    auto_class = "AutoModelForCausalLM" if causal else None
    models = {"model": load_model(args.model, args.revision, args.allow_pickle, auto_class, args.dtype)}
    if args.reference:
        models["reference"] = load_model(args.reference, None, args.allow_pickle, auto_class, args.dtype)
        if callable(embedding_rows(models["reference"])):
            raise CommandError(f"--reference {args.reference} is itself compressed: pass the original model.")
    tokenizer = AutoTokenizer.from_pretrained(args.reference or args.model) if causal else None
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
    if args.lm_eval:
        results["lm_eval"] = {}
        for role, model in models.items():
            try:
                scores = lm_eval_scores(
                    model,
                    tokenizer,
                    args.lm_eval,
                    include_path=args.lm_eval_include,
                    limit=args.lm_eval_limit,
                    num_fewshot=args.lm_eval_fewshot,
                    batch_size=args.batch_size,
                )
            except ValueError as error:
                raise CommandError(f"--lm-eval: {error}") from None
            results["lm_eval"][role] = scores
        for task, metrics in results["lm_eval"]["model"].items():
            for metric, value in metrics.items():
                if "_stderr," in metric:
                    continue
                line = f"{task}: {metric.split(',')[0]} {value:.4f}"
                stderr = metrics.get(metric.replace(",", "_stderr,", 1))
                if stderr is not None:
                    line += f" (+/- {stderr:.4f})"
                reference = results["lm_eval"].get("reference", {}).get(task, {}).get(metric)
                if reference is not None:
                    line += f", reference {reference:.4f}"
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
