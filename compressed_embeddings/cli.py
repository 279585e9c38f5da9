"""The `compressed-embeddings` command line.

```
compressed-embeddings compress MODEL_OR_PATH --ratio 10 [--method autoencoder|svd] [--code-dim K] --output DIR
                             [--dtype auto|float32|bfloat16|float16] [--push-to-hub USER/NAME] [--base-model HUB_ID]
compressed-embeddings evaluate MODEL_OR_PATH --text SOURCE [--text SOURCE ...] [--reference ORIGINAL] [--json FILE]
compressed-embeddings hook install|uninstall|status [--target DIR]
```

Data parallel on several processes: `accelerate launch --multi_gpu --num_processes N -m compressed_embeddings
compress ...` (the main process writes the output).

One module, one `<name>_command_parser` / `<name>_command` pair per sub-command (accelerate's layout).
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from .hook import hook_command_parser

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class CommandError(Exception):
    """A user error: printed without a traceback, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that the same clean-up as for Ctrl-C runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _signals_deferred():
    """Record SIGINT/SIGTERM instead of acting on them, around steps that must not be cut in half."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in signals}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _publish(staging: Path, output: Path, overwrite: bool) -> None:
    """Move the complete `staging` folder to `output`. An existing `output` is replaced only with `overwrite`, and
    is put back if the move fails."""
    if not output.exists() and not output.is_symlink():
        os.replace(staging, output)
        return
    if not overwrite:
        raise CommandError(f"{output} appeared while compressing. Choose another --output or pass --overwrite.")
    backup = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.replace(output, backup / output.name)
    try:
        os.replace(staging, output)
    except BaseException:
        os.replace(backup / output.name, output)
        backup.rmdir()
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


DTYPES = ("auto", "float32", "bfloat16", "float16")


def _add_dtype_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help=f"dtype to load {what} in: auto (default: the dtype its weights are stored in, as transformers' "
        "dtype='auto'), float32, bfloat16 or float16.",
    )


def _load_model(
    source: str,
    revision: str | None,
    allow_pickle: bool = False,
    auto_class: str | None = None,
    dtype: str = "auto",
):
    import torch
    import transformers
    from safetensors import SafetensorError
    from transformers import AutoConfig

    if not Path(source).expanduser().exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise CommandError(f"{source}: no such file or directory. Pass a local model folder or a Hub id (user/name).")
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise CommandError(f"Could not load a transformers config from {source!r}: {error}") from None
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    if auto_class is not None:
        model_class = getattr(transformers, auto_class)
    if model_class is None:
        model_class = transformers.AutoModel
    try:  # safetensors only, unless --allow-pickle (transformers then prefers safetensors, else unpickles .bin)
        return model_class.from_pretrained(
            source,
            revision=revision,
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
            use_safetensors=None if allow_pickle else True,
        )
    except SafetensorError as error:
        raise CommandError(
            f"Cannot read the weights of {source}: {error}. The safetensors file is corrupted or truncated (an "
            "interrupted download or copy?): download or copy it again."
        ) from None
    except ValueError as error:
        if auto_class is None:
            raise
        raise CommandError(f"{source} cannot be loaded as {auto_class}: {error}") from None
    except OSError as error:
        local = Path(source).expanduser()
        if allow_pickle or "safetensors" not in str(error) or (local.is_dir() and not any(local.glob("*.bin*"))):
            raise CommandError(f"Could not load the weights of {source}: {error}") from None
        raise CommandError(
            f"{source} has no safetensors weights, only pickle files (pytorch_model.bin), which are refused: "
            "unpickling a file can run arbitrary code. If you trust its source, pass --allow-pickle."
        ) from None


def compress_command_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compress",
        help="Compress a model's token embedding and save a self-contained checkpoint.",
        description="Replace the token embedding of MODEL_OR_PATH by codes + decoder and save the result into "
        "OUTPUT (weights, config with auto_map, code files, tokenizer, generation config).",
    )
    parser.add_argument("model", metavar="MODEL_OR_PATH", help="A local model folder or a Hub id.")
    parser.add_argument("--output", "-o", required=True, help="Folder to write the compressed checkpoint into.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--ratio",
        type=float,
        help="Target compression ratio, default 10 (stored parameters; transform_coding: bytes in the model's dtype).",
    )
    size.add_argument("--code-dim", type=int, help="Code width k (instead of --ratio).")
    parser.add_argument(
        "--method",
        default="autoencoder",
        help="autoencoder (the paper's, default), svd, or transform_coding (the best measured; give "
        "--calibration-text).",
    )
    parser.add_argument(
        "--calibration-text",
        nargs="+",
        metavar="SRC",
        help="Generic text for transform_coding's calibration (token counts, head-input statistics): .txt/.jsonl/"
        ".json files, folders of .txt, or Hub datasets, as for `evaluate --text`.",
    )
    parser.add_argument(
        "--calibration-tokens", type=int, default=16384, help="Tokens of calibration text run through the model."
    )
    parser.add_argument(
        "--first-tier-rows", type=int, help="transform_coding: rows of the most important tier; tiers double (128)."
    )
    parser.add_argument(
        "--input-weight", type=float, help="transform_coding: weight of input frequency in a row's importance (1)."
    )
    parser.add_argument(
        "--kl-steps",
        type=int,
        help="transform_coding with --calibration-text: steps fitting codebooks + decoder to the logits (100).",
    )
    parser.add_argument(
        "--decoder-dtype",
        choices=["float", "int8"],
        help="Storage of a linear decoder's weight: the model's float dtype, or int8 with one scale per code column "
        "(default: float; transform_coding: int8).",
    )
    parser.add_argument("--epochs", type=int, help="Autoencoder epochs (default: the paper's 30).")
    parser.add_argument("--max-steps", type=int, help="Stop the autoencoder after this many steps.")
    parser.add_argument("--batch-size", type=int, help="Autoencoder batch size (default 32).")
    parser.add_argument("--init", choices=["random", "svd"], help="Autoencoder initialisation (default random).")
    parser.add_argument("--seed", type=int, help="Random seed (default 1).")
    parser.add_argument(
        "--input-only", action="store_true", help="Untie a tied output head and keep its original matrix."
    )
    parser.add_argument("--revision", help="Hub revision of MODEL_OR_PATH.")
    _add_dtype_argument(parser, "MODEL_OR_PATH (and write OUTPUT)")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Load MODEL_OR_PATH from pickle weights (pytorch_model.bin) if it has no safetensors. Unpickling can "
        "run arbitrary code: only for sources you trust.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace OUTPUT if it exists.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="Also upload OUTPUT (with its model card) to this Hub repo, created if needed (needs a token: HF_TOKEN "
        "or `hf auth login`).",
    )
    parser.add_argument(
        "--base-model",
        metavar="HUB_ID",
        help="Hub id of the source model, for the model card's `base_model` (default: MODEL_OR_PATH if it is a Hub "
        "id; give it when compressing a local copy).",
    )
    parser.set_defaults(func=compress_command)
    return parser


def compress_command(args: argparse.Namespace) -> int:
    output = Path(args.output).expanduser().resolve()
    if output.exists() and not args.overwrite:
        raise CommandError(f"{output} already exists. Choose another --output or pass --overwrite to replace it.")

    from transformers import AutoTokenizer

    from .compress import compress_model
    from .configuration import CompressedEmbeddingConfig
    from .methods.autoencoder import default_accelerator

    fields = {
        "method": args.method,
        "compression_ratio": args.ratio,
        "code_dim": args.code_dim,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "init": args.init,
        "seed": args.seed,
        "compress_output_head": not args.input_only,
        "base_model": args.base_model,
        "first_tier_rows": args.first_tier_rows,
        "input_weight": args.input_weight,
        "kl_steps": args.kl_steps,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if args.decoder_dtype:
        fields["decoder_dtype"] = None if args.decoder_dtype == "float" else args.decoder_dtype
    if args.method == "transform_coding":  # the preset's defaults (kl_steps) unless overridden
        config = CompressedEmbeddingConfig.preset("transform_coding", **fields)
    else:
        config = CompressedEmbeddingConfig(**fields)
    calibration_texts = None
    if args.calibration_text:
        if config.method != "transform_coding":
            raise CommandError(
                "--calibration-text is used by --method transform_coding only; drop it or change method."
            )
        from .evaluation import load_texts

        calibration_texts = [doc for source in args.calibration_text for doc in load_texts(source)]

    start = time.perf_counter()
    model = _load_model(args.model, args.revision, args.allow_pickle, dtype=args.dtype)
    source_bytes = _folder_bytes(Path(args.model)) if Path(args.model).is_dir() else None
    print(
        f"Loaded {type(model).__name__} from {args.model} ({str(model.dtype).removeprefix('torch.')}) in "
        f"{time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    accelerator = default_accelerator()  # under `accelerate launch`, the processes train together
    calibration = None
    if calibration_texts is not None:
        from .calibration import collect_calibration

        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
        calibration = collect_calibration(
            model, tokenizer, calibration_texts, max_tokens=args.calibration_tokens, show_progress=not args.quiet
        )
        print(f"Calibrated on {calibration.num_tokens} tokens in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    model = compress_model(model, config, show_progress=not args.quiet, calibration=calibration)
    report = model.compression_report
    if not accelerator.is_main_process:  # only the main process writes (and pushes) the checkpoint
        return 0

    # Everything is written into a hidden temporary folder next to OUTPUT, moved into place only when complete;
    # on an error, Ctrl-C or SIGTERM it is removed, so OUTPUT is either absent (or untouched) or complete.
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
        model.save_pretrained(staging)
        try:
            AutoTokenizer.from_pretrained(args.model, revision=args.revision).save_pretrained(staging)
        except (OSError, ValueError, TypeError) as error:
            print(f"warning: no tokenizer copied ({error})", file=sys.stderr)
        (staging / "compression_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        with _signals_deferred() as received:
            _publish(staging, output, args.overwrite)
        args.published = output
        if received:
            print(f"note: interrupt received while moving the finished checkpoint into place; {output} is complete")
    except BaseException as error:
        if staging is not None:
            with _signals_deferred():
                shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(error, (KeyboardInterrupt, CommandError)):
            print(f"error: {type(error).__name__} while writing; no output was written to {output}", file=sys.stderr)
        raise

    print(report)
    saved = report.original_bytes - report.stored_bytes
    print(
        f"Embedding: {report.original_bytes / 2**20:.1f} MiB -> {report.stored_bytes / 2**20:.1f} MiB in "
        f"{report.dtype} ({report.bytes_ratio:.2f}x), {saved / 2**20:.1f} MiB saved; "
        f"{report.bytes_ratio_vs_fp32:.2f}x against the fp32 matrix ({report.original_parameters * 4 / 2**20:.1f} MiB)"
    )
    written = _folder_bytes(output)
    if source_bytes:
        print(f"Checkpoint folder: {source_bytes / 2**20:.1f} MiB -> {written / 2**20:.1f} MiB")
        if written > source_bytes - 0.5 * saved:
            print(
                f"warning: the output folder is not {0.5 * saved / 2**20:.1f} MiB smaller than the source although "
                f"the embedding saved {saved / 2**20:.1f} MiB: the rest of the model was written in {report.dtype}; "
                "is the source stored in a narrower dtype? Pass --dtype auto (the default) to keep it.",
                file=sys.stderr,
            )
    print(f"Saved to {output}")
    if args.push_to_hub:
        from .hub import push_folder

        try:
            commit = push_folder(model, output, args.push_to_hub)
        except Exception as error:  # network, authentication, permissions: the local output stays valid
            print(f"error: {output} is saved, but pushing it to {args.push_to_hub} failed: {error}", file=sys.stderr)
            return 1
        print(f"Pushed to {commit.commit_url}")
    return 0


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
    _add_dtype_argument(parser, "MODEL and the reference")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON to FILE.")
    parser.add_argument("--allow-pickle", action="store_true", help="Accept pickle weights (trusted sources only).")
    parser.set_defaults(func=evaluate_command)
    return parser


def evaluate_command(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from .compress import embedding_rows
    from .evaluation import embedding_fidelity, load_texts, perplexity, token_frequencies

    if not args.text and not args.reference:
        raise CommandError("Nothing to evaluate: pass --text SOURCE (perplexity) and/or --reference MODEL (fidelity).")
    texts = {}
    for source in args.text:
        try:
            texts[source] = load_texts(source, split=args.split, text_column=args.text_column)
        except (OSError, ValueError, KeyError) as error:
            raise CommandError(f"Could not read --text {source}: {error}") from None
    auto_class = "AutoModelForCausalLM" if texts else None
    models = {"model": _load_model(args.model, args.revision, args.allow_pickle, auto_class, args.dtype)}
    if args.reference:
        models["reference"] = _load_model(args.reference, None, args.allow_pickle, auto_class, args.dtype)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compressed-embeddings", description="Compress the token embedding of transformers models."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    compress_command_parser(subparsers)
    evaluate_command_parser(subparsers)
    hook_command_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return args.func(args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as error:
        what = "terminated" if isinstance(error, Terminated) else "interrupted"
        published = getattr(args, "published", None)
        print(
            f"{what}: {published} was already complete" if published else f"{what}: no output was written",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED
    except ValueError as error:  # invalid configs and unsupported models say what to do
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
