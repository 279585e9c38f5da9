"""The `compressed-embeddings` command line.

```
compressed-embeddings compress MODEL_OR_PATH --ratio 10 [--method autoencoder|svd] [--code-dim K] --output DIR
```

One module, one `<name>_command_parser` / `<name>_command` pair per sub-command (accelerate's layout).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _load_model(source: str, revision: str | None):
    import torch
    import transformers
    from transformers import AutoConfig

    if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise CommandError(f"{source}: no such file or directory. Pass a local model folder or a Hub id (user/name).")
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise CommandError(f"Could not load a transformers config from {source!r}: {error}") from None
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    if model_class is None:
        model_class = transformers.AutoModel
    return model_class.from_pretrained(source, revision=revision, dtype=torch.float32)


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
    size.add_argument("--ratio", type=float, help="Target compression ratio (stored parameters), default 10.")
    size.add_argument("--code-dim", type=int, help="Code width k (instead of --ratio).")
    parser.add_argument("--method", default="autoencoder", help="autoencoder (the paper's, default) or svd.")
    parser.add_argument("--epochs", type=int, help="Autoencoder epochs (default: the paper's 30).")
    parser.add_argument("--max-steps", type=int, help="Stop the autoencoder after this many steps.")
    parser.add_argument("--batch-size", type=int, help="Autoencoder batch size (default 32).")
    parser.add_argument("--init", choices=["random", "svd"], help="Autoencoder initialisation (default random).")
    parser.add_argument("--seed", type=int, help="Random seed (default 1).")
    parser.add_argument(
        "--input-only", action="store_true", help="Untie a tied output head and keep its original matrix."
    )
    parser.add_argument("--revision", help="Hub revision of MODEL_OR_PATH.")
    parser.add_argument("--overwrite", action="store_true", help="Replace OUTPUT if it exists.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.set_defaults(func=compress_command)
    return parser


def compress_command(args: argparse.Namespace) -> int:
    output = Path(args.output).expanduser().resolve()
    if output.exists() and not args.overwrite:
        raise CommandError(f"{output} already exists. Choose another --output or pass --overwrite to replace it.")

    from transformers import AutoTokenizer

    from .compress import compress_model
    from .configuration import CompressedEmbeddingConfig

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
    }
    config = CompressedEmbeddingConfig(**{k: v for k, v in fields.items() if v is not None})

    start = time.perf_counter()
    model = _load_model(args.model, args.revision)
    source_bytes = _folder_bytes(Path(args.model)) if Path(args.model).is_dir() else None
    print(f"Loaded {type(model).__name__} from {args.model} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    model = compress_model(model, config, show_progress=not args.quiet)
    report = model.compression_report

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(staging)
        try:
            AutoTokenizer.from_pretrained(args.model, revision=args.revision).save_pretrained(staging)
        except (OSError, ValueError, TypeError) as error:
            print(f"warning: no tokenizer copied ({error})", file=sys.stderr)
        (staging / "compression_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if output.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, backup / output.name)
            os.replace(staging, output)
            shutil.rmtree(backup)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    print(report)
    embedding_bytes_saved = (report.original_parameters - report.stored_parameters) * 4
    print(
        f"Embedding: {report.original_parameters * 4 / 2**20:.1f} MiB -> "
        f"{report.stored_parameters * 4 / 2**20:.1f} MiB (fp32), {embedding_bytes_saved / 2**20:.1f} MiB saved"
    )
    written = _folder_bytes(output)
    if source_bytes:
        print(f"Checkpoint folder: {source_bytes / 2**20:.1f} MiB -> {written / 2**20:.1f} MiB")
    print(f"Saved to {output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compressed-embeddings", description="Compress the token embedding of transformers models."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    compress_command_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as error:  # invalid configs and unsupported models say what to do
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
