"""`compressed-embeddings compress`: replace a model's token embedding by codes + decoder and save the checkpoint.

The flags of the methods' settings are not written here: [`add_method_arguments`] generates one per setting of every
registered method (`compressed_embeddings.methods.register_method`) when the parser is built, from the settings
dataclass (name, type, `metadata={"help": ..., "choices": ...}`), so a new method's settings appear on the command
line without editing this module. The generic flags (`--ratio`, `--code-dim`, `--seed`, ...) are fields of
`CompressedEmbeddingConfig` itself and are written here.
"""

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from dataclasses import replace
from pathlib import Path

from ..configuration import CompressedEmbeddingConfig
from ..methods import registered_methods, uses_calibration
from .common import (
    CommandError,
    add_dtype_argument,
    check_output,
    folder_bytes,
    load_model,
    publish,
    save_tokenizer,
)

SETTING_TYPES = (int, float, str, bool)


# ------------------------------------------------------------------------------------------------ generated flags
def _methods() -> dict:
    """The registered methods, the default one (`CompressedEmbeddingConfig().method`) first."""
    methods = registered_methods()
    default = CompressedEmbeddingConfig.__dataclass_fields__["method"].default
    return {**({default: methods[default]} if default in methods else {}), **methods}


def _settings(config_class: type) -> list[dataclasses.Field]:
    """The settings of a method: the fields of its settings dataclass that its constructor takes."""
    return [item for item in dataclasses.fields(config_class) if item.init]


def _setting_type(config_class: type, item: dataclasses.Field) -> tuple[type, bool]:
    """`(type, is a list)` of a setting, from its annotation: int, float, str, bool; `X | None` is X; `list[X]`."""
    hint = typing.get_type_hints(config_class)[item.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        hint = kinds[0] if len(kinds) == 1 else hint
    many = typing.get_origin(hint) is list and len(typing.get_args(hint)) == 1
    kind = typing.get_args(hint)[0] if many else hint
    if kind not in SETTING_TYPES or (many and kind is bool):
        raise TypeError(
            f"{config_class.__name__}.{item.name} is annotated {hint!r}: the command line reads settings of type "
            "int, float, str or bool (or `X | None`, `list[X]` of those); change its annotation."
        )
    return kind, many


def add_method_arguments(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Add a flag per setting of every registered method to `parser`, in a group per method ("<name> settings", its
    `summary`): `--<setting-name-with-dashes>`, typed from the field's annotation (a bool is `--x/--no-x`), `choices`
    and help from its metadata, default None (the method's default: only the flags given reach the config). A setting
    two methods share gets one flag; their types (and choices) must agree. Returns the flags by setting name."""
    taken = {action.dest for action in parser._actions} | set(parser._defaults) | {"command", "func", "published"}
    flags: dict[str, tuple[argparse.Action, tuple]] = {}
    for name, entry in _methods().items():
        group = parser.add_argument_group(f"{name} settings", entry.config_class.summary or None)
        for item in _settings(entry.config_class):
            kind, many = _setting_type(entry.config_class, item)
            choices = item.metadata.get("choices")
            signature = (kind, many, tuple(choices) if choices is not None else None)
            text = f"{name}: {item.metadata.get('help') or '(no help text)'}".replace("%", "%%")
            if item.name in flags:
                action, other = flags[item.name]
                if other != signature:
                    raise TypeError(
                        f"Setting {item.name!r} of method {name!r} has another type or choices than the setting of "
                        f"the same name of another registered method ({signature} != {other}): one flag cannot read "
                        "both; rename one."
                    )
                action.help += f" {text}"
                continue
            if item.name in taken:
                raise ValueError(
                    f"Setting {item.name!r} of method {name!r} has the name of another argument of `compress`: "
                    "rename it."
                )
            options: dict = {"dest": item.name, "default": None, "help": text}
            if kind is bool:
                options["action"] = argparse.BooleanOptionalAction
            else:
                options.update(type=kind, choices=choices, nargs="+" if many else None)
            action = group.add_argument("--" + item.name.replace("_", "-"), **options)
            flags[item.name] = (action, signature)
    return {name: action for name, (action, _) in flags.items()}


def _method_help() -> tuple[str, str]:
    """The metavar and help of `--method`, from the registered methods' names and summaries."""
    methods = _methods()
    listed = [
        f"{name} ({entry.config_class.summary})" if entry.config_class.summary else name
        for name, entry in methods.items()
    ]
    text = " or ".join([", ".join(listed[:-1]), listed[-1]] if len(listed) > 1 else listed)
    text += f". Default: {next(iter(methods))}. A method's settings are the flags of its group below; the other "
    text += "methods' are ignored, with a warning."
    return "{" + ",".join(methods) + "}", text.replace("%", "%%")


# ------------------------------------------------------------------------------------------------ parser
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
    # Names of the registered methods in the help, but no argparse `choices`: an unknown name is refused by
    # `CompressedEmbeddingConfig`, whose message (exit status 2, no usage dump) lists the registered methods.
    metavar, method_help = _method_help()
    parser.add_argument("--method", metavar=metavar, help=method_help)
    parser.add_argument(
        "--calibration-text",
        nargs="+",
        metavar="SRC",
        help="Text transform_coding calibrates on (token counts, head-input statistics, logits to fit): 'generic' "
        "(default: the package's own generic text, the Brown corpus' calibration split, fetched once and cached), "
        "'none' (data-free: the model generates its own text), or .txt/.jsonl/.json files, folders of .txt, or Hub "
        "datasets, as for `evaluate --text`.",
    )
    parser.add_argument(
        "--calibration-tokens", type=int, default=16384, help="Tokens of calibration text run through the model."
    )
    parser.add_argument(
        "--decoder-dtype",
        choices=["float", "int8"],
        help="Storage of a linear decoder's weight: the model's float dtype, or int8 with one scale per code column "
        "(default: float; transform_coding: int8).",
    )
    parser.add_argument("--seed", type=int, help="Random seed (default 1).")
    parser.add_argument(
        "--input-only",
        action="store_true",
        help="Keep the output head's original matrix (a tied head is untied; an untied one is not compressed).",
    )
    parser.add_argument(
        "--head-ratio",
        type=float,
        metavar="R",
        help="Ratio of an untied output head's own codes (default: as --ratio). A tied head reads the embedding's.",
    )
    parser.add_argument("--revision", help="Hub revision of MODEL_OR_PATH.")
    add_dtype_argument(parser, "MODEL_OR_PATH (and write OUTPUT)")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Load MODEL_OR_PATH from pickle weights (pytorch_model.bin) if it has no safetensors. Unpickling can "
        "run arbitrary code: only for sources you trust.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace OUTPUT if it exists.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Read only MODEL_OR_PATH's config (the model is built on the meta device, no weights are read) and "
        "print the sizes the run would produce: embedding, stored bytes, ratio, checkpoint weights. Writes nothing.",
    )
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
    add_method_arguments(parser)
    parser.set_defaults(func=compress_command)
    return parser


def _method_settings(args: argparse.Namespace) -> dict:
    """The settings of registered methods given on the command line (a flag left out is the method's default)."""
    names = {item.name for entry in registered_methods().values() for item in _settings(entry.config_class)}
    return {name: getattr(args, name) for name in sorted(names) if getattr(args, name, None) is not None}


def _compression_config(args: argparse.Namespace):
    """The `CompressedEmbeddingConfig` the `compress` arguments ask for."""
    fields = {
        "method": args.method,
        "compression_ratio": args.ratio,
        "code_dim": args.code_dim,
        "seed": args.seed,
        "compress_output_head": not args.input_only,
        "base_model": args.base_model,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if args.decoder_dtype:
        fields["decoder_dtype"] = None if args.decoder_dtype == "float" else args.decoder_dtype
    config = CompressedEmbeddingConfig(**fields, **_method_settings(args))
    if args.head_ratio is not None:
        if args.input_only:
            raise CommandError("--head-ratio sizes the head's own codes; --input-only keeps the head: drop one.")
        config.output_head = replace(config, compression_ratio=args.head_ratio, code_dim=None)
        config.validate()
    if args.calibration_text and not uses_calibration(config.method):
        users = " or ".join(name for name in registered_methods() if uses_calibration(name))
        raise CommandError(f"--calibration-text is used by --method {users} only; drop it or change method.")
    return config


def _calibration_keyword(args: argparse.Namespace) -> str | None:
    """'generic' or 'none' when --calibration-text is one of those keywords (default 'generic'), else None (text)."""
    sources = args.calibration_text or ["generic"]
    return sources[0].lower() if len(sources) == 1 and sources[0].lower() in ("generic", "none") else None


def _tokenizer_or_none(source: str, revision: str | None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------ command
def compress_command(args: argparse.Namespace) -> int:
    if args.dry_run:
        from .dry_run import dry_run_command

        return dry_run_command(args)
    output = Path(args.output).expanduser().resolve()
    check_output(output, args.overwrite)

    from ..calibration import collect_calibration, resolve_calibration
    from ..compress import choice_line, compress_model
    from ..methods.autoencoder import default_accelerator

    config = _compression_config(args)
    sources = args.calibration_text or ["generic"]
    keyword = _calibration_keyword(args)
    calibration_texts = None
    if uses_calibration(config.method) and keyword is None:
        from ..texts import load_texts

        calibration_texts = [doc for source in sources for doc in load_texts(source)]

    start = time.perf_counter()
    model = load_model(args.model, args.revision, args.allow_pickle, dtype=args.dtype)
    source_bytes = folder_bytes(Path(args.model)) if Path(args.model).is_dir() else None
    print(
        f"Loaded {type(model).__name__} from {args.model} ({str(model.dtype).removeprefix('torch.')}) in "
        f"{time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    accelerator = default_accelerator()  # under `accelerate launch`, the processes train together
    calibration = None
    if uses_calibration(config.method):
        start = time.perf_counter()
        tokenizer = _tokenizer_or_none(args.model, args.revision)
        if calibration_texts is not None:
            if tokenizer is None:
                raise CommandError(f"{args.model} has no tokenizer to read --calibration-text with.")
            calibration = collect_calibration(
                model, tokenizer, calibration_texts, max_tokens=args.calibration_tokens, show_progress=not args.quiet
            )
        else:
            calibration = resolve_calibration(
                model,
                "generic" if keyword == "generic" else None,
                tokenizer,
                max_tokens=args.calibration_tokens,
                show_progress=not args.quiet,
            )
        print(f"Calibrated on {calibration.source} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(choice_line(replace(config, calibration_data=getattr(calibration, "source", None))), file=sys.stderr)
    model = compress_model(model, config, show_progress=not args.quiet, calibration=calibration)
    report = model.compression_report
    if not accelerator.is_main_process:  # only the main process writes (and pushes) the checkpoint
        return 0

    # Everything is written into a hidden temporary folder next to OUTPUT, moved into place only when complete;
    # on an error, Ctrl-C or SIGTERM it is removed, so OUTPUT is either absent (or untouched) or complete.
    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        save_tokenizer(args.model, args.revision, staging)
        (staging / "compression_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")

    publish(output, write, args, doing="compressing")

    print(report)
    saved = report.original_bytes - report.stored_bytes
    print(
        f"Embedding: {report.original_bytes / 2**20:.1f} MiB -> {report.stored_bytes / 2**20:.1f} MiB in "
        f"{report.dtype} ({report.bytes_ratio:.2f}x), {saved / 2**20:.1f} MiB saved; "
        f"{report.bytes_ratio_vs_fp32:.2f}x against the fp32 matrix ({report.original_parameters * 4 / 2**20:.1f} MiB)"
    )
    if (head := report.output_head) is not None:
        saved += head.original_bytes - head.stored_bytes
        print(
            f"Output head (untied, codes of its own): {head.original_bytes / 2**20:.1f} MiB -> "
            f"{head.stored_bytes / 2**20:.1f} MiB in {head.dtype} ({head.bytes_ratio:.2f}x)"
        )
    written = folder_bytes(output)
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
        from ..hub import push_folder

        try:
            commit = push_folder(model, output, args.push_to_hub)
        except Exception as error:  # network, authentication, permissions: the local output stays valid
            print(f"error: {output} is saved, but pushing it to {args.push_to_hub} failed: {error}", file=sys.stderr)
            return 1
        print(f"Pushed to {commit.commit_url}")
    return 0
