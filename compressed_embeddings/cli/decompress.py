"""`compressed-embeddings decompress`: write a compressed checkpoint back as a stock one.

The embedding is decoded into a plain lookup table (a tied head tied to it again) and the model saved with its stock
`model_type` and class, no `auto_map`, no code files, for runtimes that only load stock models. The output is
written atomically, as `compress`'s.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from .common import (
    CommandError,
    add_dtype_argument,
    check_output,
    folder_bytes,
    load_config,
    load_model,
    mib,
    publish,
    save_tokenizer,
    tensor_bytes,
)


def decompress_command_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "decompress",
        help="Write a compressed checkpoint back as a stock one, for runtimes that only load stock models.",
        description="Load the compressed checkpoint MODEL, decode its embedding into a plain lookup table (the tied "
        "head re-tied) and save a stock checkpoint into OUTPUT: the stock model_type, no auto_map, no code files, the "
        "tokenizer and generation config copied. It loads without this package or trust_remote_code (llama.cpp's "
        "convert_hf_to_gguf.py, vLLM, TGI, ...); the embedding is full size again, with the compressed one's quality.",
    )
    parser.add_argument("model", metavar="MODEL", help="A compressed checkpoint: a local folder or a Hub id.")
    parser.add_argument("--output", "-o", required=True, help="Folder to write the stock checkpoint into.")
    parser.add_argument("--overwrite", action="store_true", help="Replace OUTPUT if it exists.")
    parser.add_argument("--revision", help="Hub revision of MODEL.")
    add_dtype_argument(parser, "MODEL (and write OUTPUT)")
    parser.set_defaults(func=decompress_command)
    return parser


def _check_stock_folder(folder: Path) -> None:
    """Raise unless `folder` holds a stock checkpoint: config.json without auto_map or the compressed block and with
    a stock model_type, no code files, no model card of a compressed model."""
    from ..cards import CARD_MARKER
    from ..configuration import CLASS_PREFIX, CONFIG_KEY, MODEL_TYPE_PREFIX

    config = json.loads((folder / "config.json").read_text())
    problems = [key for key in ("auto_map", CONFIG_KEY) if key in config]
    if str(config.get("model_type", "")).startswith(MODEL_TYPE_PREFIX):
        problems.append(f"model_type {config['model_type']}")
    problems += [f"architecture {a}" for a in config.get("architectures") or [] if a.startswith(CLASS_PREFIX)]
    problems += [path.name for path in folder.rglob("*.py")]
    card = folder / "README.md"
    if card.is_file() and CARD_MARKER in card.read_text(encoding="utf-8"):
        problems.append("README.md is a compressed model's card")
    if problems:
        raise RuntimeError(f"The decompressed checkpoint is not a stock one: {', '.join(problems)}.")


def decompress_command(args: argparse.Namespace) -> int:
    output = Path(args.output).expanduser().resolve()
    check_output(output, args.overwrite)
    local = Path(args.model).expanduser()
    if local.exists() and local.resolve() == output:
        raise CommandError("--output is the compressed checkpoint itself; write the stock one to another folder.")

    from ..compress import decompress_model
    from ..configuration import CONFIG_KEY

    config = load_config(args.model, args.revision)
    if getattr(config, CONFIG_KEY, None) is None:
        raise CommandError(
            f"{args.model} is not a compressed checkpoint (model_type {config.model_type!r}, no `{CONFIG_KEY}` block "
            "in config.json): it already loads in stock runtimes; there is nothing to decompress."
        )
    start = time.perf_counter()
    model = load_model(args.model, args.revision, dtype=args.dtype)
    compressed_class = type(model).__name__
    layer = model.get_input_embeddings()
    stored = tensor_bytes(layer.state_dict().values())
    model = decompress_model(model)
    model.config.architectures = [type(model).__name__]
    weight = model.get_input_embeddings().weight
    decoded = tensor_bytes([weight])
    print(
        f"Decoded the embedding of {compressed_class} from {args.model} in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        save_tokenizer(args.model, args.revision, staging)
        _check_stock_folder(staging)

    publish(output, write, args, doing="decompressing")

    before = folder_bytes(local) if local.is_dir() else _cached_snapshot_bytes(args.model, args.revision)
    after = folder_bytes(output)
    dtype = str(weight.dtype).removeprefix("torch.")
    print(
        f"Embedding: {weight.shape[0]} x {weight.shape[1]} in {dtype}: {stored:,} bytes stored compressed -> "
        f"{decoded:,} bytes decoded ({mib(stored)} -> {mib(decoded)}): the saving is gone, the compressed "
        "embedding's quality stays."
    )
    print(f"Checkpoint folder: {mib(before) if before else '?'} -> {mib(after)}")
    model_type = json.loads((output / "config.json").read_text())["model_type"]
    print(f"Saved a stock {type(model).__name__} (model_type {model_type}) to {output}")
    print(
        "It loads without compressed_embeddings or trust_remote_code: for runtimes that only know stock models "
        "(llama.cpp's convert_hf_to_gguf.py, vLLM, TGI); to keep the smaller checkpoint, use the compressed one."
    )
    return 0


def _cached_snapshot_bytes(repo_id: str, revision: str | None) -> int | None:
    """Bytes of the Hub checkpoint `repo_id` as cached locally (just downloaded by loading it), or None."""
    try:
        from huggingface_hub import snapshot_download

        return folder_bytes(Path(snapshot_download(repo_id, revision=revision, local_files_only=True)))
    except Exception:  # not cached as a snapshot (e.g. some files only): the size is then unknown
        return None
