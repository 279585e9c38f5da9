"""What the sub-commands of the command line share: the user error, exit statuses, the `--dtype` flag, loading a
model or its config as a command does (user errors said in one line), byte counts, and writing an output folder
atomically with the CLI's messages."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..modeling import UnsafeCheckpointError, looks_like_local_path, refuse_pickle_only
from ..publishing import OutputExistsError, write_atomically

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

DTYPES = ("auto", "float32", "bfloat16", "float16")


class CommandError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def publish(output: Path, write: Callable[[Path], object], args: argparse.Namespace, doing: str) -> None:
    """`publishing.write_atomically` for a command: `args.overwrite` decides whether an existing OUTPUT is replaced,
    an OUTPUT that appeared meanwhile is a user error, and `args.published` records the complete OUTPUT (what `main`
    reports on a later Ctrl-C)."""
    try:
        args.published = write_atomically(output, write, overwrite=args.overwrite, doing=doing)
    except OutputExistsError as error:
        raise CommandError(f"{error}. Choose another --output or pass --overwrite.") from None


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing OUTPUT up front unless `overwrite` (before any work is done)."""
    if output.exists() and not overwrite:
        raise CommandError(f"{output} already exists. Choose another --output or pass --overwrite to replace it.")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def mib(size: float) -> str:
    return f"{size / 2**20:,.2f} MiB"


def add_dtype_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help=f"dtype to load {what} in: auto (default: the dtype its weights are stored in, as transformers' "
        "dtype='auto'), float32, bfloat16 or float16.",
    )


def load_model(
    source: str,
    revision: str | None,
    allow_pickle: bool = False,
    auto_class: str | None = None,
    dtype: str = "auto",
):
    import torch
    from safetensors import SafetensorError

    cls = model_class(load_config(source, revision), auto_class)
    try:  # safetensors only, unless --allow-pickle (transformers then prefers safetensors, else unpickles .bin)
        return cls.from_pretrained(
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
        if not allow_pickle:
            try:
                refuse_pickle_only(source, error, opt_in="pass --allow-pickle")
            except UnsafeCheckpointError as refused:
                raise CommandError(str(refused)) from None
        raise CommandError(f"Could not load the weights of {source}: {error}") from None


def load_config(source: str, revision: str | None):
    from transformers import AutoConfig

    if looks_like_local_path(source) and not Path(source).expanduser().exists():
        raise CommandError(f"{source}: no such file or directory. Pass a local model folder or a Hub id (user/name).")
    try:
        return AutoConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise CommandError(f"Could not load a transformers config from {source!r}: {error}") from None


def model_class(config, auto_class: str | None = None) -> type:
    """The class `config.architectures` names (a stock transformers class, or this package's compressed class of
    one, e.g. `CompressedLlamaForCausalLM`), `auto_class` if given, else `AutoModel`."""
    import transformers

    from .. import modeling

    if auto_class is not None:
        return getattr(transformers, auto_class)
    architectures = getattr(config, "architectures", None) or []
    name = architectures[0] if architectures else None
    found = getattr(transformers, name, None) if name else None
    if found is None and name and name.startswith(modeling.CLASS_PREFIX):
        found = getattr(modeling, name, None)
    return found if found is not None else transformers.AutoModel


def save_tokenizer(source: str, revision: str | None, folder: Path) -> None:
    """Copy the tokenizer of `source` into `folder`, or warn that there is none to copy."""
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(source, revision=revision).save_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        print(f"warning: no tokenizer copied ({error})", file=sys.stderr)
