"""The `compressed-embeddings` command line.

```
compressed-embeddings compress MODEL_OR_PATH --output DIR [--ratio 10] [--method transform_coding|autoencoder|svd]
                             [--calibration-text generic|none|SRC ...] [--code-dim K]
                             [--dtype auto|float32|bfloat16|float16] [--push-to-hub USER/NAME] [--base-model HUB_ID]
                             [--dry-run]
compressed-embeddings decompress COMPRESSED_DIR_OR_HUB_ID --output DIR [--overwrite] [--dtype ...]
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
from dataclasses import dataclass, replace
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


def _publish(staging: Path, output: Path, overwrite: bool, doing: str = "compressing") -> None:
    """Move the complete `staging` folder to `output`. An existing `output` is replaced only with `overwrite`, and
    is put back if the move fails."""
    if not output.exists() and not output.is_symlink():
        os.replace(staging, output)
        return
    if not overwrite:
        raise CommandError(f"{output} appeared while {doing}. Choose another --output or pass --overwrite.")
    backup = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.replace(output, backup / output.name)
    try:
        os.replace(staging, output)
    except BaseException:
        os.replace(backup / output.name, output)
        backup.rmdir()
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _write_atomically(
    output: Path, overwrite: bool, args: argparse.Namespace, write, doing: str = "compressing"
) -> None:
    """Run `write(staging)` into a hidden temporary folder next to `output`, then move that folder into place
    (`_publish`) and set `args.published`. On an error, Ctrl-C or SIGTERM the temporary folder is removed, so
    `output` is either absent (or untouched) or complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
        write(staging)
        with _signals_deferred() as received:
            _publish(staging, output, overwrite, doing)
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
    from safetensors import SafetensorError

    model_class = _model_class(_load_config(source, revision), auto_class)
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


def _load_config(source: str, revision: str | None):
    from transformers import AutoConfig

    if not Path(source).expanduser().exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise CommandError(f"{source}: no such file or directory. Pass a local model folder or a Hub id (user/name).")
    try:
        return AutoConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise CommandError(f"Could not load a transformers config from {source!r}: {error}") from None


def _model_class(config, auto_class: str | None = None) -> type:
    """The class `config.architectures` names (a stock transformers class, or this package's compressed class of
    one, e.g. `CompressedLlamaForCausalLM`), `auto_class` if given, else `AutoModel`."""
    import transformers

    from . import modeling

    if auto_class is not None:
        return getattr(transformers, auto_class)
    architectures = getattr(config, "architectures", None) or []
    name = architectures[0] if architectures else None
    model_class = getattr(transformers, name, None) if name else None
    if model_class is None and name and name.startswith(modeling.CLASS_PREFIX):
        model_class = getattr(modeling, name, None)
    return model_class if model_class is not None else transformers.AutoModel


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
        help="transform_coding (default: the best measured, packed codes of a few bits), autoencoder (the paper's, "
        "its published recipe) or svd (the baseline).",
    )
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
    parser.set_defaults(func=compress_command)
    return parser


def _compression_config(args: argparse.Namespace):
    """The `CompressedEmbeddingConfig` the `compress` arguments ask for."""
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
        "base_model": args.base_model,
        "first_tier_rows": args.first_tier_rows,
        "input_weight": args.input_weight,
        "kl_steps": args.kl_steps,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if args.decoder_dtype:
        fields["decoder_dtype"] = None if args.decoder_dtype == "float" else args.decoder_dtype
    config = CompressedEmbeddingConfig(**fields)
    if args.calibration_text and config.method != "transform_coding":
        raise CommandError("--calibration-text is used by --method transform_coding only; drop it or change method.")
    return config


def _calibration_keyword(args: argparse.Namespace) -> str | None:
    """'generic' or 'none' when --calibration-text is one of those keywords (default 'generic'), else None (text)."""
    sources = args.calibration_text or ["generic"]
    return sources[0].lower() if len(sources) == 1 and sources[0].lower() in ("generic", "none") else None


def compress_command(args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run_command(args)
    output = Path(args.output).expanduser().resolve()
    if output.exists() and not args.overwrite:
        raise CommandError(f"{output} already exists. Choose another --output or pass --overwrite to replace it.")

    from transformers import AutoTokenizer

    from .calibration import collect_calibration, resolve_calibration
    from .compress import choice_line, compress_model
    from .methods.autoencoder import default_accelerator

    config = _compression_config(args)
    sources = args.calibration_text or ["generic"]
    keyword = _calibration_keyword(args)
    calibration_texts = None
    if config.method == "transform_coding" and keyword is None:
        from .evaluation import load_texts

        calibration_texts = [doc for source in sources for doc in load_texts(source)]

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
    if config.method == "transform_coding":
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
        try:
            AutoTokenizer.from_pretrained(args.model, revision=args.revision).save_pretrained(staging)
        except (OSError, ValueError, TypeError) as error:
            print(f"warning: no tokenizer copied ({error})", file=sys.stderr)
        (staging / "compression_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")

    _write_atomically(output, args.overwrite, args, write)

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


def _tokenizer_or_none(source: str, revision: str | None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------ compress --dry-run
@dataclass
class DryRunSizes:
    """The sizes `compress --dry-run` predicts from a model's config alone ([`dry_run_sizes`]); bytes in `dtype`.

    `stored_bytes` is what the compressed embedding stores (`CompressionReport.stored_bytes`), exactly when `exact`;
    otherwise (transform coding below its ceiling) an upper bound: the byte budget, which the bit allocation, run on
    the weights, fills up to at most. `checkpoint_weight_bytes` is the weights the output's safetensors hold (the
    folder adds config.json, the code files, the model card and the tokenizer).
    """

    model_class: str
    method: str
    num_embeddings: int
    embedding_dim: int
    code_dim: int
    dtype: str
    dtype_from: str
    tied_output_head: bool
    original_bytes: int
    stored_bytes: int
    exact: bool
    parts: dict[str, int]
    source_weight_bytes: int
    checkpoint_weight_bytes: int
    budget_bytes: float | None = None

    @property
    def bytes_ratio(self) -> float:
        """`original_bytes / stored_bytes` (a lower bound unless `exact`)."""
        return self.original_bytes / self.stored_bytes


def _resolve_dtype(config, dtype: str):
    """`(torch dtype, where it comes from)`: `dtype`, or for "auto" the config's `dtype` (`torch_dtype` in older
    files) as transformers' `dtype="auto"` reads it, float32 when the config names none."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype), "--dtype"
    value = getattr(config, "dtype", None) or config.to_dict().get("torch_dtype")
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    if isinstance(value, torch.dtype):
        return value, "config.json"
    return torch.float32, "default: config.json names no dtype"


def _meta_model(source: str, revision: str | None, dtype: str):
    """The model of `source` built from its config on the meta device (no weights read), with its dtype's origin."""
    import torch

    from .configuration import CONFIG_KEY

    config = _load_config(source, revision)
    if getattr(config, CONFIG_KEY, None) is not None:
        raise CommandError(
            f"{source} is already compressed (model_type {config.model_type!r}). Pass the original model, or "
            f"`compressed-embeddings decompress {source} --output DIR` first to re-compress."
        )
    torch_dtype, origin = _resolve_dtype(config, dtype)
    model_class = _model_class(config)
    with torch.device("meta"):
        if hasattr(model_class, "_from_config"):
            model = model_class._from_config(config, dtype=torch_dtype)
        else:  # AutoModel
            model = model_class.from_config(config, dtype=torch_dtype)
    return model, origin


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def dry_run_sizes(
    model: str,
    config=None,
    *,
    dtype: str = "auto",
    revision: str | None = None,
    calibration: str = "generic",
) -> DryRunSizes:
    """What `compress` would produce for `model` (a folder or Hub id) with `config` (a `CompressedEmbeddingConfig`,
    default the default one), computed from the model's config alone: the model is built on the meta device, no
    weights are read. `dtype` as `--dtype`; `calibration` as `--calibration-text` ("generic", "none", or anything
    else for text), which decides whether transform coding cuts the rows into tiers.

    Autoencoder and SVD sizes are exact: the layer the resolved config describes, built on the meta device. Transform
    coding allocates its bits on the weights: its stored bytes are exact only when every column can have the most
    bits within the budget, else the budget is an upper bound ([`DryRunSizes`]).
    """
    import math
    from dataclasses import replace as replace_fields

    from .compress import _input_embedding
    from .configuration import CompressedEmbeddingConfig
    from .layer import CompressedEmbedding
    from .modeling import head_is_tied

    config = config if config is not None else CompressedEmbeddingConfig()
    meta, dtype_from = _meta_model(model, revision, dtype)
    embedding = _input_embedding(meta)  # the same checks as the real run: a lookup table it can replace
    num_embeddings, embedding_dim = embedding.weight.shape
    weight_dtype = embedding.weight.dtype
    tied = head_is_tied(meta)
    head_copy = tied and not config.compress_output_head  # the real run unties the head and keeps its matrix
    spec = config.resolved(
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        padding_idx=embedding.padding_idx,
        tied_output_head=tied and not head_copy,
    )
    budget = None
    if spec.method == "transform_coding":
        from .methods.transform_coding import byte_budget, tier_sizes_for

        # Rows are cut into tiers when calibration yields token importances: text (generic or yours) does, and so
        # does the data-free calibration of a model that generates; random token ids (no head or no generation)
        # do not.
        generates = meta.get_output_embeddings() is not None and meta.can_generate()
        tiered = calibration.lower() != "none" or generates
        sizes = tier_sizes_for(num_embeddings, spec.first_tier_rows) if tiered else [num_embeddings]
        budget, _, most = byte_budget(num_embeddings, embedding_dim, weight_dtype, spec, sizes)
        exact = most <= budget
        stored = most if exact else math.floor(budget)
        layout = replace_fields(spec, code_bits=[[0] * embedding_dim] * len(sizes), tier_sizes=sizes)
        layer = CompressedEmbedding.from_config(layout, device="meta", dtype=weight_dtype)
        state = layer.state_dict()
        decoder = _tensor_bytes(t for name, t in state.items() if name.startswith("decoder."))
        tiers = _tensor_bytes(t for name, t in state.items() if name.endswith("row_tiers"))
        parts = {"decoder (int8 weight, scales, bias)" if spec.decoder_dtype == "int8" else "decoder": decoder}
        parts["row tiers (1 byte a row)"] = tiers
        parts[f"bit planes + codebooks ({len(sizes)} tier(s))"] = stored - decoder - tiers
    else:
        layer = CompressedEmbedding.from_config(spec, device="meta", dtype=weight_dtype)
        parts = {
            f"{name} {'x'.join(map(str, t.shape))} {str(t.dtype).removeprefix('torch.')}": _tensor_bytes([t])
            for name, t in layer.state_dict().items()
        }
        stored, exact = sum(parts.values()), True
    original = num_embeddings * embedding_dim * weight_dtype.itemsize
    seen: dict[int, object] = {}  # tied tensors are one object, saved once
    for tensor in meta.state_dict(keep_vars=True).values():
        seen.setdefault(id(tensor), tensor)
    source_bytes = _tensor_bytes(seen.values())
    return DryRunSizes(
        model_class=type(meta).__name__,
        method=spec.method,
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        code_dim=spec.code_dim,
        dtype=str(weight_dtype).removeprefix("torch."),
        dtype_from=dtype_from,
        tied_output_head=tied,
        original_bytes=original,
        stored_bytes=stored,
        exact=exact,
        parts=parts,
        source_weight_bytes=source_bytes,
        checkpoint_weight_bytes=source_bytes - original + stored + (original if head_copy else 0),
        budget_bytes=budget,
    )


def _mib(size: float) -> str:
    return f"{size / 2**20:,.2f} MiB"


def dry_run_command(args: argparse.Namespace) -> int:
    config = _compression_config(args)
    sizes = dry_run_sizes(
        args.model, config, dtype=args.dtype, revision=args.revision, calibration=_calibration_keyword(args) or "text"
    )
    bound = "" if sizes.exact else "at most "
    head = "tied to it" if sizes.tied_output_head else "not tied to it"
    if sizes.tied_output_head and not config.compress_output_head:
        head += " (--input-only: untied, its matrix kept)"
    print(
        f"Dry run: {sizes.model_class} built from the config of {args.model} on the meta device (no weights read); "
        f"nothing written to {args.output}."
    )
    print(
        f"Embedding: {sizes.num_embeddings} x {sizes.embedding_dim} in {sizes.dtype} ({sizes.dtype_from}); output "
        f"head {head}."
    )
    print(f"Original embedding: {sizes.original_bytes:,} bytes ({_mib(sizes.original_bytes)})")
    parts = ", ".join(f"{name} {size:,}" for name, size in sizes.parts.items())
    print(
        f"Stored by {sizes.method} (code width {sizes.code_dim}): {bound}{sizes.stored_bytes:,} bytes "
        f"({_mib(sizes.stored_bytes)}) = {parts}"
    )
    print(f"Ratio: {'at least ' if bound else ''}{sizes.bytes_ratio:.2f}x in {sizes.dtype}")
    print(
        f"Checkpoint weights: {sizes.source_weight_bytes:,} -> {bound}{sizes.checkpoint_weight_bytes:,} bytes "
        f"({_mib(sizes.source_weight_bytes)} -> {_mib(sizes.checkpoint_weight_bytes)}); the folder adds config.json, "
        "the code files, the model card and the tokenizer"
    )
    if not sizes.exact:
        print(
            f"note: {sizes.method} allocates its bits on the weights; the run stores at most the budget "
            f"({sizes.budget_bytes:,.1f} bytes = the embedding's bytes / {config.compression_ratio:g}), usually a "
            "little less (what no further bit fits in)."
        )
    return 0


# ------------------------------------------------------------------------------------------------ decompress
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
    _add_dtype_argument(parser, "MODEL (and write OUTPUT)")
    parser.set_defaults(func=decompress_command)
    return parser


def _check_stock_folder(folder: Path) -> None:
    """Raise unless `folder` holds a stock checkpoint: config.json without auto_map or the compressed block and with
    a stock model_type, no code files, no model card of a compressed model."""
    from .configuration import CLASS_PREFIX, CONFIG_KEY, MODEL_TYPE_PREFIX
    from .hub import CARD_MARKER

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
    if output.exists() and not args.overwrite:
        raise CommandError(f"{output} already exists. Choose another --output or pass --overwrite to replace it.")
    local = Path(args.model).expanduser()
    if local.exists() and local.resolve() == output:
        raise CommandError("--output is the compressed checkpoint itself; write the stock one to another folder.")

    from transformers import AutoTokenizer

    from .compress import decompress_model
    from .configuration import CONFIG_KEY

    config = _load_config(args.model, args.revision)
    if getattr(config, CONFIG_KEY, None) is None:
        raise CommandError(
            f"{args.model} is not a compressed checkpoint (model_type {config.model_type!r}, no `{CONFIG_KEY}` block "
            "in config.json): it already loads in stock runtimes; there is nothing to decompress."
        )
    start = time.perf_counter()
    model = _load_model(args.model, args.revision, dtype=args.dtype)
    compressed_class = type(model).__name__
    layer = model.get_input_embeddings()
    stored = _tensor_bytes(layer.state_dict().values())
    model = decompress_model(model)
    model.config.architectures = [type(model).__name__]
    weight = model.get_input_embeddings().weight
    decoded = _tensor_bytes([weight])
    print(
        f"Decoded the embedding of {compressed_class} from {args.model} in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        try:
            AutoTokenizer.from_pretrained(args.model, revision=args.revision).save_pretrained(staging)
        except (OSError, ValueError, TypeError) as error:
            print(f"warning: no tokenizer copied ({error})", file=sys.stderr)
        _check_stock_folder(staging)

    _write_atomically(output, args.overwrite, args, write, doing="decompressing")

    before = _folder_bytes(local) if local.is_dir() else _cached_snapshot_bytes(args.model, args.revision)
    after = _folder_bytes(output)
    dtype = str(weight.dtype).removeprefix("torch.")
    print(
        f"Embedding: {weight.shape[0]} x {weight.shape[1]} in {dtype}: {stored:,} bytes stored compressed -> "
        f"{decoded:,} bytes decoded ({_mib(stored)} -> {_mib(decoded)}): the saving is gone, the compressed "
        "embedding's quality stays."
    )
    print(f"Checkpoint folder: {_mib(before) if before else '?'} -> {_mib(after)}")
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

        return _folder_bytes(Path(snapshot_download(repo_id, revision=revision, local_files_only=True)))
    except Exception:  # not cached as a snapshot (e.g. some files only): the size is then unknown
        return None


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


if __name__ == "__main__":
    sys.exit(main())
