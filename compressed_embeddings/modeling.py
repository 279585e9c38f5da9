"""Model classes whose token embedding is a `CompressedEmbedding`, for any transformers family.

This file travels inside every saved checkpoint (remote code): it imports only the standard library,
torch, transformers and single-dot siblings.

`CompressedLlamaForCausalLM` subclasses `LlamaForCausalLM`: its `__init__` builds the stock model, then
replaces the input embedding by the compressed layer the config describes, ties a tied output head to it
(`CompressedOutputHead`), and updates the tie declarations. Classes are built on first access by name
(`modeling.CompressedQwen2ForSequenceClassification`), so every family transformers knows has them.
"""

import contextlib
import json
import math
import shutil
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.auto import modeling_auto
from transformers.utils import cached_file, logging

from .configuration import (
    CLASS_PREFIX,
    CONFIG_KEY,
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    compressed_config_class,
)
from .layer import CompressedEmbedding, CompressedOutputHead, sha256
from .version import __version__

logger = logging.get_logger(__name__)

#: The files that make a checkpoint loadable with `trust_remote_code=True`.
CODE_FILES = ("configuration.py", "layer.py", "modeling.py", "packed_codes.py", "packed_runtime.py", "version.py")

#: Auto classes a compressed checkpoint is registered for, with transformers' name tables.
AUTO_CLASS_TABLES = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
}


class NotACompressedCheckpointError(ValueError):
    """A stock (uncompressed) config or checkpoint was given to a compressed model class."""


class CheckpointMismatchError(ValueError):
    """A compressed checkpoint is of another family than the class loading it, or its weights disagree with its
    config.json."""


class UnsafeCheckpointError(OSError):
    """A checkpoint has pickle weights (`*.bin`) only; they are refused unless `use_safetensors=False` is passed."""


class DamagedCheckpointError(OSError):
    """A checkpoint's files are damaged: unreadable, or a tensor of its compressed embedding holds values no save
    writes or other bytes than its SHA-256 recorded at save. The message names the file, the tensor, what is wrong
    and what to do (download it again or re-create it)."""


class CorruptCheckpointError(DamagedCheckpointError):
    """A checkpoint's safetensors file cannot be read at all (corrupted or truncated)."""


_RECREATE = "re-create the checkpoint with `compressed-embeddings compress BASE_MODEL --output DIR`"


def compressed_spec(config) -> CompressedEmbeddingConfig:
    """The validated `CompressedEmbeddingConfig` stored in a model config (raises if there is none)."""
    block = getattr(config, CONFIG_KEY, None)
    if block is None:
        raise NotACompressedCheckpointError(
            f"This config (model_type {getattr(config, 'model_type', '?')!r}) has no `{CONFIG_KEY}` block: it "
            "describes a stock, uncompressed model, so there are no codes to load. Compress it first, with "
            "`compressed-embeddings compress MODEL_OR_PATH --ratio 10 --output OUT` or "
            "`compress_model(model, CompressedEmbeddingConfig(...))` + `save_pretrained(OUT)`, then load OUT."
        )
    if isinstance(block, CompressedEmbeddingConfig):
        block = block.to_dict()
    try:
        return CompressedEmbeddingConfig.from_dict(block, require_resolved=True)
    except CompressedEmbeddingConfigError as error:
        if CONFIG_KEY in str(error):  # the message already says where the value comes from
            raise
        raise CompressedEmbeddingConfigError(
            f"{error} (from the `{CONFIG_KEY}` block of the model config: fix it in config.json or {_RECREATE})"
        ) from None


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The qualified name of `module` inside `model` ("" for the model itself)."""
    for name, candidate in model.named_modules(remove_duplicate=False):
        if candidate is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(model).__name__}.")


def head_is_tied(model: PreTrainedModel) -> bool:
    """Whether the model's declared ties bind its output head's weight to its input embedding."""
    output = model.get_output_embeddings()
    if output is None:
        return False
    if isinstance(output, CompressedOutputHead):
        return output.tied
    input_name = module_name(model, model.get_input_embeddings())
    output_name = module_name(model, output)
    ties = getattr(model, "all_tied_weights_keys", None) or {}
    return ties.get(f"{output_name}.weight") == f"{input_name}.weight"


def _drop_ties(model: PreTrainedModel, input_name: str, output_name: str | None) -> None:
    """Forget tie declarations that involve the replaced embedding matrix or the head's matrix."""

    def touches(key: str) -> bool:
        return key.startswith(f"{input_name}.") or (output_name is not None and key == f"{output_name}.weight")

    declared = type(model)._tied_weights_keys or {}
    model._tied_weights_keys = {t: s for t, s in declared.items() if not touches(t) and not touches(s)}
    model.all_tied_weights_keys = {
        t: s
        for t, s in (getattr(model, "all_tied_weights_keys", None) or {}).items()
        if not touches(t) and not touches(s)
    }


def compressed_layers(model: nn.Module) -> dict[str, CompressedEmbedding]:
    """Every `CompressedEmbedding` of `model` by qualified name: the input embedding's, and an untied output head's
    own (`lm_head.embedding`); a tied head's layer is listed once, where it lives."""
    return {name: module for name, module in model.named_modules() if isinstance(module, CompressedEmbedding)}


def install_compressed_embedding(
    model: PreTrainedModel,
    layer: "CompressedEmbedding | CompressedEmbeddingConfig",
    tie_head: bool | None = None,
    head: "CompressedEmbedding | CompressedEmbeddingConfig | None" = None,
) -> CompressedEmbedding:
    """Replace `model`'s input embedding by `layer`: a built `CompressedEmbedding` (moved to the device of the
    embedding it replaces), or a resolved `CompressedEmbeddingConfig`, from which an uninitialised one is built on that
    device and in that dtype (the meta device while `from_pretrained` builds the model). If the output head is tied to
    the input embedding (`tie_head`; default: the config's `tied_output_head`, which no flag of the model config
    overrides, or for a built layer the model's tie declarations), it becomes a `CompressedOutputHead` sharing the
    layer; `head` (default: the config's `output_head`), an untied head's own layer, makes it one reading that layer.
    Returns the installed layer.
    """
    if isinstance(layer, CompressedEmbeddingConfig):
        tie_head = layer.tied_output_head if tie_head is None else tie_head
        head = layer.output_head if head is None else head
    old = model.get_input_embeddings()
    # the device and dtype to build on; an already compressed embedding (an inner model built through the Auto
    # classes, e.g. a sequence classifier's backbone) is not decoded for it: its `weight` would decode every row
    reference = None if isinstance(old, CompressedEmbedding) else getattr(old, "weight", None)
    if not isinstance(reference, torch.Tensor):
        reference = next(p for p in old.parameters() if p.is_floating_point())
    if tie_head is None:
        tie_head = head_is_tied(model)
    output = model.get_output_embeddings() if tie_head or head is not None else None
    input_name = module_name(model, old)
    output_name = module_name(model, output) if output is not None else None

    def built(layer):
        if isinstance(layer, CompressedEmbeddingConfig):
            return CompressedEmbedding.from_config(layer, device=reference.device, dtype=reference.dtype)
        return layer if reference.device.type == "meta" else layer.to(reference.device)

    layer = built(layer)
    model.set_input_embeddings(layer)
    if output is not None:
        reads = layer if tie_head else built(head)
        new_head = CompressedOutputHead(reads, bias=getattr(output, "bias", None) is not None, tied=bool(tie_head))
        if new_head.bias is not None and output.bias.device.type != "meta":
            with torch.no_grad():
                new_head.bias.copy_(output.bias)
        model.set_output_embeddings(new_head)
    _drop_ties(model, input_name, output_name)
    if output is not None and new_head.bias is not None:  # BERT's head re-shares its bias: declare it, as tied BERT
        for name, param in model.named_parameters(remove_duplicate=False):
            if param is new_head.bias and name != f"{output_name}.bias":
                model.all_tied_weights_keys = {**model.all_tied_weights_keys, f"{output_name}.bias": name}
    return layer


class CompressedModelMixin:
    """Behaviour shared by every compressed model class (put first in the bases, before the stock class)."""

    base_model_class: type = None
    #: `(model, folder, repo_id)` -> writes README.md (the model card); set by the installed package, else None.
    write_model_card = None

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        spec = compressed_spec(config)
        setattr(config, CONFIG_KEY, spec.to_dict())  # in this release's format (a re-save writes it)
        install_compressed_embedding(self, spec)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, stricter: a missing local path, a checkpoint of another family,
        codes or decoder missing or of other shapes than config.json says (whatever `ignore_mismatched_sizes`), an
        unreadable safetensors file and stored values or bytes that are damaged (`_check_stored`) raise errors that say
        what to do. Pickle weights (`*.bin`) are refused unless `use_safetensors=False` is passed. The codes stay
        frozen as `freeze_codes` says."""
        source = pretrained_model_name_or_path
        _check_source(cls, source, kwargs)
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        with_info = kwargs.pop("output_loading_info", False)
        safetensors_only = kwargs.get("use_safetensors") is None
        if safetensors_only:
            kwargs["use_safetensors"] = True
        try:
            model, info = super().from_pretrained(
                source, *model_args, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs
            )
        except OSError as error:
            if safetensors_only:
                refuse_pickle_only(source, error, kwargs.get("subfolder", ""))
            raise
        except Exception as error:
            if type(error).__name__ != "SafetensorError":
                raise
            raise CorruptCheckpointError(
                f"Cannot read the weights of {source}: {error}. The safetensors file is corrupted or truncated (an "
                f"interrupted download or copy?): download it again (`force_download=True`) or {_RECREATE}."
            ) from error
        _check_loaded(model, info, ignore_mismatched, source)
        _check_stored(model, source, kwargs)
        for name, layer in compressed_layers(model).items():
            if layer.codes is not None:
                layer.codes.requires_grad_(not compressed_spec(model.config).freeze_codes)
            else:
                _build_runtime_from_checkpoint(model, name, layer, source, kwargs)
        return (model, info) if with_info else model

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the first floating parameter other than codes (which may be stored
        in a narrower dtype, see `codes_dtype`)."""
        codes = {id(layer.codes) for layer in compressed_layers(self).values()}
        return next(p.dtype for p in self.parameters() if p.is_floating_point() and id(p) not in codes)

    # -------------------------------------------------------------- saving
    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus a complete `auto_map` and the code files, so that the
        folder loads with `trust_remote_code=True` where this package is not installed, and the SHA-256 of the
        compressed embedding's tensors in config.json; `push_to_hub=True` uploads the folder once they are written."""
        push = kwargs.pop("push_to_hub", False)
        hub = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "create_pr") if key in kwargs}
        block = dict(getattr(self.config, CONFIG_KEY))
        block["library_version"] = __version__
        if kwargs.get("is_main_process", True):  # checksums of the tensors about to be written
            block["tensor_sha256"] = tensor_sha256(self, kwargs.get("state_dict"))
        setattr(self.config, CONFIG_KEY, block)
        self.config.auto_map = auto_map(type(self).base_model_class)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            here = Path(__file__).resolve().parent
            for name in CODE_FILES:
                shutil.copyfile(here / name, Path(save_directory) / name)
            if self.write_model_card is not None:
                self.write_model_card(save_directory, hub.get("repo_id"))
            if push:  # upload once the code files are written (transformers' own push would upload before)
                from transformers.utils.hub import hf_api

                token, repo_id = kwargs.get("token"), hub.pop("repo_id", Path(save_directory).name)
                repo_id = hf_api().create_repo(repo_id, exist_ok=True, token=token).repo_id
                self._upload_modified_files(save_directory, repo_id, {}, token=token, **hub)
        return result

    # -------------------------------------------------------------- vocabulary
    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> CompressedEmbedding:
        """Resize the vocabulary of the compressed embedding (and of the head: a tied head's bias, an untied head).

        New tokens get codes drawn from a normal distribution with the mean and covariance of the existing
        codes (`mean_resizing=True`, as transformers does for plain embeddings) or the mean code otherwise.
        """
        layer = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return layer
        target = layer.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            target = math.ceil(target / pad_to_multiple_of) * pad_to_multiple_of
        if not isinstance(target, int) or target < 1:
            raise ValueError(
                f"resize_token_embeddings: new_num_tokens must be a positive integer, got {new_num_tokens!r}; "
                "a vocabulary needs at least one token."
            )
        old_size = layer.num_embeddings
        if target != old_size:
            head = self.get_output_embeddings()
            _resize_codes(layer, target, mean_resizing)
            if isinstance(head, CompressedOutputHead) and not head.tied:  # an untied head's own codes
                _resize_codes(head.embedding, target, mean_resizing)
            if isinstance(head, CompressedOutputHead) and head.bias is not None:
                _replace_parameter(self, head.bias, _resized(head.bias, target))
            elif head is not None and not isinstance(head, CompressedOutputHead):  # an untied head: resize it too
                if isinstance(head, nn.Embedding):
                    new_head = self._get_resized_embeddings(head, target, mean_resizing=mean_resizing)
                else:
                    new_head = self._get_resized_lm_head(head, target, mean_resizing=mean_resizing)
                new_head.requires_grad_(head.weight.requires_grad)
                self.set_output_embeddings(new_head)
                if getattr(new_head, "bias", None) is not None:  # untied: the head owns its bias (BERT re-shares it)
                    new_head.bias = nn.Parameter(new_head.bias.detach().clone(), new_head.bias.requires_grad)
            self.config.get_text_config().vocab_size = target
            if self.config.get_text_config() is not self.config:
                self.config.vocab_size = target
            block = dict(getattr(self.config, CONFIG_KEY))
            block["num_embeddings"] = target
            if block.get("output_head"):
                block["output_head"] = {**block["output_head"], "num_embeddings": target}
            if block.get("padding_idx") is not None and block["padding_idx"] >= target:
                block["padding_idx"], layer.padding_idx, layer.zero_padding_row = None, None, False
                block["zero_padding_row"] = False
            setattr(self.config, CONFIG_KEY, block)
        return layer


def _checkpoint_files(source, kwargs: dict) -> list[str]:
    """The safetensors files `from_pretrained` read for `source` (a local folder or a Hub id already in the cache)."""
    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "subfolder", "token") if kwargs.get(k) is not None}
    name = f"model.{kwargs['variant']}" if kwargs.get("variant") else "model"
    single = cached_file(source, f"{name}.safetensors", _raise_exceptions_for_missing_entries=False, **hub)
    if single:
        return [single]
    index = cached_file(source, f"{name}.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub)
    if not index:
        return []
    shards = json.loads(Path(index).read_text())["weight_map"].values()
    return sorted({str(Path(index).parent / name) for name in shards})


def tensor_sha256(model: PreTrainedModel, state_dict: dict | None = None) -> dict[str, str] | None:
    """The SHA-256 of every tensor of the model's compressed embeddings, by the weight name `save_pretrained` writes
    (from `state_dict` where one is given to it); None when there are none, or they are not in memory (meta)."""
    prefixes = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, CompressedEmbedding))
    state = model.state_dict() if state_dict is None else state_dict
    tensors = {key: tensor for key, tensor in state.items() if key.startswith(prefixes)}
    if not tensors or any(tensor.device.type == "meta" for tensor in tensors.values()):
        return None
    return {key: sha256(tensor) for key, tensor in sorted(tensors.items())}


def _check_stored(model: PreTrainedModel, source, kwargs: dict) -> None:
    """Refuse a checkpoint whose compressed embeddings hold values no save writes (`CompressedEmbedding.
    stored_problems`), or other bytes than the SHA-256 recorded in config.json at save (`tensor_sha256`), as its files
    store them (whatever dtype the model is loaded in; nothing is checked where no file is found: a state dict)."""
    spec, prefix = compressed_spec(model.config), getattr(model, "base_model_prefix", "") + "."
    digests, problems, tensors, files = spec.tensor_sha256 or {}, {}, {}, {}
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError, ValueError):  # no files to read: nothing checked
            for path in [] if source is None or kwargs.get("gguf_file") else _checkpoint_files(source, kwargs):
                handle = stack.enter_context(safe_open(path, "pt"))
                files.update(dict.fromkeys(handle.keys(), (path, handle)))

        def read(key: str) -> torch.Tensor:  # as the checkpoint stores it, read once
            if key not in tensors:
                tensors[key] = files[key][1].get_tensor(key)
            return tensors[key]

        for name, layer in [item for item in model.named_modules() if isinstance(item[1], CompressedEmbedding)]:
            stored = {}  # the layer's state-dict names -> weight names in the files
            for key in layer.state_dict():
                full = f"{name}.{key}"  # saved by another head class: with or without the base model's prefix
                if found := next(filter(files.__contains__, (full, prefix + full, full.removeprefix(prefix))), None):
                    stored[key] = found
            for key, what in layer.stored_problems({k: read(w) for k, w in stored.items()}).items():
                problems[stored[key]] = what
        for key, expected in digests.items() if files else ():
            if key not in files or sha256(read(key)) != expected:
                problems.setdefault(key, "is missing from the weights" if key not in files else "holds other bytes "
                                    "than were saved: its SHA-256 is not the one config.json records")  # fmt: skip
    if not (digests and files):
        reason = "no checksums in config.json: saved before they were written; values checked" if files else "no file"
        logger.info(f"{source}: the bytes of the compressed embedding are not verified ({reason}).")
    if problems:
        listed = "; ".join(f"{files.get(key, (source,))[0]}, tensor {key!r} {what}" for key, what in problems.items())
        raise DamagedCheckpointError(
            f"The checkpoint {source} is damaged: {listed}. Loaded, it would give wrong outputs without an error, so "
            f"it is refused. Download it again (`from_pretrained(..., force_download=True)`) or {_RECREATE}."
        )


def _build_runtime_from_checkpoint(
    model: PreTrainedModel, name: str, layer: CompressedEmbedding, source, kwargs: dict
) -> None:
    """Build packed codes' runtime layout (`packed_runtime`) of the layer `name` from the checkpoint file, read apart
    from the memory map the model's weights live in: the model's planes then stay unread, so a running model holds the
    runtime layout and not the planes as well (they are read again by `save_pretrained`). Anything unexpected (a state
    dict passed in, a file that moved) leaves the layout to be built from the planes on first use, as in memory."""
    marker = ".packed.planes."

    def unprefixed(key: str) -> str:  # a checkpoint of another class of the family may add or drop the base prefix
        return key.removeprefix(f"{model.base_model_prefix}.")

    def ours(key: str) -> bool:
        return marker in key and unprefixed(key.rsplit(marker, 1)[0]) == unprefixed(name)

    try:
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(safe_open(path, "pt")) for path in _checkpoint_files(source, kwargs)]
            found = {int(key.rsplit(marker, 1)[1]): (h, key) for h in handles for key in h.keys() if ours(key)}
            if sorted(found) != list(range(len(layer.packed.planes))):
                return

            def read(tier: int, start: int, stop: int) -> torch.Tensor:
                handle, key = found[tier]
                return handle.get_slice(key)[start:stop]

            layer.packed_runtime(read_planes=read)
    except Exception as error:  # the layout is an optimisation: never fail a load over it
        logger.info(f"Packed codes' runtime layout not built from {source} ({error}); it is built on first use.")


def looks_like_local_path(source) -> bool:
    """Whether `source` can only be a local path, not a Hub id (`name`, `user/name`): a path object, or text starting
    with `/`, `.` or `~`, absolute on this system (`C:/...`), or holding a backslash or more than one `/`."""
    text = str(source)
    shaped = text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1 or Path(text).is_absolute()
    return shaped or hasattr(source, "__fspath__")


def refuse_pickle_only(source, error: OSError, subfolder: str = "", opt_in: str | None = None) -> None:
    """Raise `UnsafeCheckpointError` (advising `opt_in`) if `error` says that `source` has pickle weights only."""
    opt_in = (
        opt_in or "opt in with `from_pretrained(..., use_safetensors=False)`, then `save_pretrained` it to convert it"
    )
    local = Path(str(source), subfolder).expanduser()
    if "safetensors" in str(error) and (not local.is_dir() or any(local.glob("*.bin*"))):
        raise UnsafeCheckpointError(
            f"{source} has no safetensors weights, only pickle files (pytorch_model.bin), which are refused: "
            f"unpickling a file can run arbitrary code. If you trust its source, {opt_in}."
        ) from error


def _check_source(cls: type, source, kwargs: dict) -> None:
    """Before building anything, refuse a local path that does not exist and a compressed checkpoint of another
    family (transformers would load it with every weight missing)."""
    if source is None or kwargs.get("gguf_file"):
        return
    text = str(source)
    if looks_like_local_path(source) and not Path(text).expanduser().exists():
        raise FileNotFoundError(
            f"{text}: no such file or directory. Pass the folder of a compressed checkpoint (written by "
            "`save_pretrained` or `compressed-embeddings compress`) or a Hub id (user/name)."
        )
    if isinstance(kwargs.get("config"), PreTrainedConfig):
        return
    hub_kwargs = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")
    try:
        data, _ = PreTrainedConfig.get_config_dict(source, **{k: kwargs[k] for k in hub_kwargs if k in kwargs})
    except (OSError, ValueError):
        return  # transformers reports it when it loads the config
    found, expected = (data or {}).get("model_type"), cls.config_class.model_type
    if (data or {}).get(CONFIG_KEY) is not None and found != expected:
        raise CheckpointMismatchError(
            f"{text} is a {found!r} checkpoint, but {cls.__name__} loads {expected!r} ones: its weights do not fit "
            f"this architecture. Load it with a class of its own family, e.g. `AutoModel.from_pretrained({text!r})`."
        )


def _check_loaded(model: PreTrainedModel, info: dict, ignore_mismatched_sizes: bool, source) -> None:
    """Refuse codes or decoder weights that are missing or have other shapes than config.json says (transformers
    would initialise them at random), whatever `ignore_mismatched_sizes` says; other mismatches as transformers."""
    prefixes = tuple(f"{name}." for name in compressed_layers(model))
    missing = set(info["missing_keys"])
    mismatched = {key: shapes for key, *shapes in info["mismatched_keys"]}
    # When nothing at all was loaded (a checkpoint of another head whose base model has another prefix), the
    # embedding is no more random than the rest: transformers reports that case itself, as for stock models.
    loaded_any = any(name not in missing and name not in mismatched for name, _ in model.named_parameters())
    ours = sorted(key for key in [*mismatched, *(missing if loaded_any else ())] if key.startswith(prefixes))
    if ours:
        spec = compressed_spec(model.config)
        details = "; ".join(
            f"{key}: {tuple(mismatched[key][0])} in the weights, {tuple(mismatched[key][1])} expected"
            if key in mismatched
            else f"{key}: missing"
            for key in ours
        )
        raise CheckpointMismatchError(
            f"The checkpoint {source} is inconsistent: its compressed embedding does not match its config.json "
            f"(num_embeddings={spec.num_embeddings}, code_dim={spec.code_dim}): {details}. Loading it would fill "
            "the embedding with random values, so it is refused (`ignore_mismatched_sizes` does not apply to it). "
            f"The files were edited or mixed up: {_RECREATE}."
        )
    if mismatched and not ignore_mismatched_sizes:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(model).__name__}: size mismatch for {sorted(mismatched)}. "
            "You may consider adding `ignore_mismatched_sizes=True` to `from_pretrained(...)` if appropriate."
        )


def _resized(tensor: torch.Tensor, size: int) -> nn.Parameter:
    new = torch.zeros(size, *tensor.shape[1:], dtype=tensor.dtype, device=tensor.device)
    keep = min(size, tensor.shape[0])
    new[:keep] = tensor.detach()[:keep]
    return nn.Parameter(new, requires_grad=tensor.requires_grad)


def _resize_codes(layer: CompressedEmbedding, size: int, mean_resizing: bool) -> None:
    old = layer.dense_codes().detach()
    new = _resized(old, size)
    extra = size - old.shape[0]
    if extra > 0:
        codes = old.float()
        mean = codes.mean(0)
        with torch.no_grad():
            if mean_resizing:
                centered = codes - mean
                covariance = centered.T @ centered / max(codes.shape[0] - 1, 1)
                covariance += 1e-5 * torch.eye(codes.shape[1], device=codes.device)
                dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=1e-5 * covariance)
                new[old.shape[0] :] = dist.sample((extra,)).to(new.dtype)
            else:
                new[old.shape[0] :] = mean.to(new.dtype)
    layer.set_codes(new.detach())


def _replace_parameter(model: nn.Module, old: nn.Parameter, new: nn.Parameter) -> None:
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is old:
                module._parameters[name] = new


def family_classes(model_type: str) -> dict[str, str]:
    """`{Auto class name: model class name}` for every Auto class in `AUTO_CLASS_TABLES` the family has."""
    found = {auto: getattr(modeling_auto, table).get(model_type) for auto, table in AUTO_CLASS_TABLES.items()}
    return {auto: name for auto, name in found.items() if isinstance(name, str)}


def auto_map(base_model_class: type) -> dict[str, str]:
    """The `auto_map` of a compressed checkpoint: AutoConfig and every Auto class the family has."""
    base_type = base_model_class.config_class.model_type
    config_name = compressed_config_class(base_model_class.config_class).__name__
    mapping = {"AutoConfig": f"configuration.{config_name}"}
    for auto_name, class_name in family_classes(base_type).items():
        mapping[auto_name] = f"modeling.{CLASS_PREFIX}{class_name}"
    if not any(v == f"modeling.{CLASS_PREFIX}{base_model_class.__name__}" for v in mapping.values()):
        mapping["AutoModel" if "AutoModel" not in mapping else f"AutoModel_{base_model_class.__name__}"] = (
            f"modeling.{CLASS_PREFIX}{base_model_class.__name__}"
        )
    return mapping


_MODEL_CLASSES: dict[type, type] = {}


def compressed_model_class(base_model_class: type) -> type:
    """The compressed counterpart of a transformers model class, e.g. `CompressedLlamaForCausalLM`."""
    if getattr(base_model_class, "base_model_class", None) is not None and issubclass(
        base_model_class, CompressedModelMixin
    ):
        return base_model_class
    if base_model_class not in _MODEL_CLASSES:
        if not (isinstance(base_model_class, type) and issubclass(base_model_class, PreTrainedModel)):
            raise TypeError(f"Expected a transformers PreTrainedModel class, got {base_model_class!r}.")
        name = CLASS_PREFIX + base_model_class.__name__
        namespace = {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"`{base_model_class.__name__}` whose token embedding is a `CompressedEmbedding`.",
            "config_class": compressed_config_class(base_model_class.config_class),
            "base_model_class": base_model_class,
        }
        _MODEL_CLASSES[base_model_class] = type(name, (CompressedModelMixin, base_model_class), namespace)
    return _MODEL_CLASSES[base_model_class]


def __getattr__(name: str) -> type:
    # `modeling.CompressedLlamaForCausalLM` -> built on first access (this is what `auto_map` names).
    if name.startswith(CLASS_PREFIX):
        base = getattr(transformers, name[len(CLASS_PREFIX) :], None)
        if isinstance(base, type) and issubclass(base, PreTrainedModel):
            return compressed_model_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
