"""The `compressed-embeddings` command line.

```
compressed-embeddings compress MODEL_OR_PATH --output DIR [--ratio 10] [--method transform_coding|autoencoder|svd]
                             [--calibration-text generic|none|SRC ...] [--code-dim K]
                             [--dtype auto|float32|bfloat16|float16] [--push-to-hub USER/NAME] [--base-model HUB_ID]
                             [--dry-run] [--<setting of a method> VALUE ...]
compressed-embeddings decompress COMPRESSED_DIR_OR_HUB_ID --output DIR [--overwrite] [--dtype ...]
compressed-embeddings evaluate MODEL_OR_PATH --text SOURCE [--text SOURCE ...] [--reference ORIGINAL] [--json FILE]
compressed-embeddings hook install|uninstall|status [--target DIR]
```

Data parallel on several processes: `accelerate launch --multi_gpu --num_processes N -m compressed_embeddings
compress ...` (the main process writes the output).

One module per sub-command, each with a `<name>_command_parser` / `<name>_command` pair (accelerate's layout):
`compress` (its method flags generated from the registered methods' settings), `dry_run` (`compress --dry-run`),
`decompress`, `evaluate`, and `hook` (in `compressed_embeddings.hook`); `common` holds what they share. Output
folders are staged and published atomically by `compressed_embeddings.publishing`. This module builds the parser
and runs a command: `main` turns user errors, Ctrl-C and SIGTERM into a message and an exit status.
"""

import argparse
import signal
import sys
import threading

from ..hook import hook_command_parser
from ..publishing import Terminated
from .common import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, CommandError
from .compress import _compression_config as _compression_config  # tests and scripts use it
from .compress import add_method_arguments, compress_command, compress_command_parser
from .decompress import decompress_command, decompress_command_parser
from .dry_run import DryRunSizes, dry_run_command, dry_run_sizes
from .evaluate import evaluate_command, evaluate_command_parser

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CommandError",
    "DryRunSizes",
    "Terminated",
    "add_method_arguments",
    "build_parser",
    "compress_command",
    "compress_command_parser",
    "decompress_command",
    "decompress_command_parser",
    "dry_run_command",
    "dry_run_sizes",
    "evaluate_command",
    "evaluate_command_parser",
    "main",
]


def _raise_terminated(signum, frame):
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command. `compress`'s method flags come from the methods registered when it is
    called (`compressed_embeddings.methods.register_method`)."""
    parser = argparse.ArgumentParser(
        prog="compressed-embeddings", description="Compress the token embedding of transformers models."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    compress_command_parser(subparsers)
    decompress_command_parser(subparsers)
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
