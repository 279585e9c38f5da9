"""A short pass over generic text that tells a compression method which errors matter.

Three statistics, all task-agnostic and cheap (one forward pass over a few thousand tokens, no training):

- token counts: frequent tokens are looked up most often, so their rows deserve more bits;
- the mean predicted probability of each token: an error in a tied head's row of token `v` costs (to second order
  in the KL divergence of the next-token distribution) in proportion to `p_v`, so likely tokens deserve more bits;
- the second moment `E[h h^T]` of the hidden states entering the output head: an error `delta` in a tied head's row
  changes that token's logit by `h . delta`, whose mean square is `delta^T E[h h^T] delta`. Measuring the error in
  that metric (instead of plain Euclidean or cosine) is what keeps perplexity close to the original.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.utils import logging

from ._utils import model_device
from .texts import DOCUMENT_SEPARATOR, as_text_list, token_frequencies

logger = logging.get_logger(__name__)


@dataclass
class CalibrationStats:
    """Statistics of a model on calibration text (see [`collect_calibration`]).

    Attributes:
        token_counts (`torch.Tensor`): int64 `(V,)`, occurrences of each token id in the texts.
        output_second_moment (`torch.Tensor` or `None`): float64 `(d, d)`, `E[h h^T]` over the hidden states that
            entered the output head; `None` for a model without one.
        num_tokens (`int`): hidden states the moment was averaged over.
        output_probability (`torch.Tensor` or `None`): float64 `(V,)`, the model's next-token distribution averaged
            over the same positions (sums to 1); `None` for a model without an output head.
        output_inputs (`torch.Tensor` or `None`): float32 `(n, d)`, a random sample of those hidden states (for
            fitting to the original logits, `kl_steps`); `None` when not kept.
        source (`str` or `None`): what the statistics were measured on, in words (recorded in the compressed
            config's `calibration_data` and the model card).
    """

    token_counts: torch.Tensor
    output_second_moment: torch.Tensor | None
    num_tokens: int
    output_probability: torch.Tensor | None = None
    output_inputs: torch.Tensor | None = None
    source: str | None = None


def _first_tokens(tokenizer: Any, texts: list[str], max_tokens: int, seed: int = 0) -> list[int]:
    """The first `max_tokens` tokens of the texts joined in a seeded random order (so that a list that runs through
    one source after another is sampled across all of them), tokenizing only as many documents as needed."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    texts = [texts[i] for i in order]
    count = 1
    while True:  # double the number of documents until the joined prefix holds enough tokens
        ids = tokenizer(DOCUMENT_SEPARATOR.join(texts[:count]), verbose=False)["input_ids"]
        if len(ids) >= max_tokens or count >= len(texts):
            return ids[:max_tokens]
        count *= 2


@torch.no_grad()
def collect_calibration(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    *,
    max_tokens: int = 16384,
    max_length: int = 512,
    batch_size: int = 4,
    keep_hidden_states: int = 8192,
    show_progress: bool = True,
    source: str | None = None,
) -> CalibrationStats:
    """Count tokens over all `texts`; average `h h^T` of the output head's inputs and the predicted next-token
    distribution over their first `max_tokens`.

    The documents, in a seeded random order, are joined with `DOCUMENT_SEPARATOR`, tokenized (only as many as
    `max_tokens` needs) and cut into independent windows of `max_length` tokens. A random `keep_hidden_states` of
    the head's input states are kept (`output_inputs`, for `kl_steps`). Run it on the original (uncompressed) model.
    `source` names the texts in the statistics (default: "N documents (M tokens)").

    Example:

    ```python
    >>> from compressed_embeddings import collect_calibration  # doctest: +SKIP
    >>> stats = collect_calibration(model, tokenizer, ["Some generic English text ..."])  # doctest: +SKIP
    >>> config = CompressedEmbeddingConfig.preset("transform_coding")  # doctest: +SKIP
    >>> model = compress_model(model, config, calibration=stats)  # doctest: +SKIP
    ```
    """
    texts = as_text_list(texts)
    if max_tokens < 1 or max_length < 1 or batch_size < 1:
        raise ValueError("max_tokens, max_length and batch_size must be positive integers.")
    vocab = model.get_input_embeddings().weight.shape[0]
    counts = token_frequencies(tokenizer, texts, vocab, show_progress=show_progress)
    head = _output_head(model)
    if source is None:
        source = f"{len(texts):,} document{'s' * (len(texts) != 1)} ({int(counts.sum()):,} tokens)"
    if head is None:
        logger.info("The model has no output head: calibration collects token counts only.")
        return CalibrationStats(counts, None, 0, source=source)
    ids = _first_tokens(tokenizer, texts, max_tokens)
    max_length = _window_length(model, max_length)
    windows = [ids[start : start + max_length] for start in range(0, len(ids), max_length)]
    if not windows:
        raise ValueError("The calibration texts are empty after tokenization; give some text.")
    return _window_statistics(model, head, windows, counts, batch_size, keep_hidden_states, show_progress, source)


def _output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None


def _window_statistics(
    model: torch.nn.Module,
    head: torch.nn.Module,
    windows: list[list[int]],
    counts: torch.Tensor,
    batch_size: int,
    keep_hidden_states: int,
    show_progress: bool,
    source: str,
) -> CalibrationStats:
    moment, probability, seen, hidden = _head_statistics(model, head, windows, batch_size, show_progress)
    keep = torch.randperm(hidden.shape[0], generator=torch.Generator().manual_seed(0))[:keep_hidden_states]
    sample = hidden[keep.sort().values] if keep.numel() else None
    return CalibrationStats(counts, moment, seen, probability, sample, source=source)


@torch.no_grad()
def random_token_calibration(
    model: torch.nn.Module, *, num_tokens: int = 2048, max_length: int = 512, seed: int = 0, batch_size: int = 4
) -> CalibrationStats:
    """Calibration without any text: `E[h h^T]` of the output head's inputs over windows of uniformly random token
    ids. The hidden states of a language model keep their dominant directions whatever the input, so this estimate
    of the head's metric is far better than none (see the quality results); token counts and the predicted
    distribution stay unmeasured (zero counts, `output_probability=None`). `compress_model` uses it for
    `transform_coding` with a tied head when no calibration is given.

    Example:

    ```python
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    >>> stats = random_token_calibration(model, num_tokens=64, max_length=32)
    >>> stats.output_second_moment.shape, stats.num_tokens
    (torch.Size([32, 32]), 64)
    ```
    """
    if num_tokens < 1 or max_length < 1 or batch_size < 1:
        raise ValueError("num_tokens, max_length and batch_size must be positive integers.")
    vocab = model.get_input_embeddings().weight.shape[0]
    counts = torch.zeros(vocab, dtype=torch.int64)
    source = f"random token ids ({num_tokens:,})"
    head = _output_head(model)
    if head is None:
        return CalibrationStats(counts, None, 0, source=source)
    ids = torch.randint(0, vocab, (num_tokens,), generator=torch.Generator().manual_seed(seed)).tolist()
    max_length = _window_length(model, max_length)
    windows = [ids[start : start + max_length] for start in range(0, num_tokens, max_length)]
    moment, _, seen, _ = _head_statistics(model, head, windows, batch_size, show_progress=False)
    return CalibrationStats(counts, moment, seen, source=source)


def _window_length(model: torch.nn.Module, max_length: int) -> int:
    """`max_length`, capped at the positions the model has (e.g. BERT's 512, or fewer in a small config; RoBERTa's
    positions start after its padding index, 514 positions hold 512 tokens)."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not (isinstance(positions, int) and positions > 0):
        return max_length
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    if hasattr(embeddings, "create_position_ids_from_input_ids"):  # RoBERTa-style positions: padding_idx + 1 on
        positions -= embeddings.padding_idx + 1
    return max(1, min(max_length, positions))


@torch.no_grad()
def _head_statistics(
    model: torch.nn.Module, head: torch.nn.Module, windows: list[list[int]], batch_size: int, show_progress: bool
) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """`E[h h^T]` of the head's inputs, the mean predicted next-token distribution, the positions seen and their
    hidden states (float32), over independent windows of token ids."""
    vocab, d = model.get_input_embeddings().weight.shape
    moment = torch.zeros(d, d, dtype=torch.float64)
    probability = torch.zeros(vocab, dtype=torch.float64)
    seen = 0
    states = []

    def accumulate(module, inputs, output):
        nonlocal moment, probability, seen
        hidden = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double().cpu()
        states.append(hidden.float())
        moment += hidden.T @ hidden
        seen += hidden.shape[0]
        for logits in output.detach().reshape(-1, output.shape[-1]).split(512):  # softmax a slice at a time
            probability += logits.float().softmax(-1).sum(0)[:vocab].double().cpu()

    device = model_device(model)
    handle = head.register_forward_hook(accumulate)
    was_training = model.training
    model.eval()
    try:
        # equal-length windows batch together; the shorter last one runs alone
        max_length = len(windows[0])
        full = [w for w in windows if len(w) == max_length]
        batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
        batches += [[w] for w in windows if len(w) != max_length]
        for batch in tqdm(batches, desc="calibration", disable=not show_progress):
            model(input_ids=torch.tensor(batch, device=device))
    finally:
        handle.remove()
        model.train(was_training)
    return moment / max(seen, 1), probability / max(seen, 1), seen, torch.cat(states)


#: The generic text `compress_model` calibrates on by default: the calibration split of the Brown corpus (500 texts
#: of 15 genres, fetched from a package registry, checksummed and cached by `compressed_embeddings.assets`).
GENERIC_TEXT = "Brown corpus, calibration split"


def generic_calibration(
    model: torch.nn.Module, tokenizer: Any, *, max_tokens: int = 16384, show_progress: bool = True
) -> CalibrationStats:
    """[`collect_calibration`] on the package's own generic text ([`GENERIC_TEXT`], fetched on first use and cached;
    no test or validation text). What `compress_model` uses when given no calibration.

    Example:

    ```python
    >>> stats = generic_calibration(model, tokenizer)  # doctest: +SKIP
    >>> stats.source  # doctest: +SKIP
    'Brown corpus, calibration split (16,384 tokens)'
    ```
    """
    from .assets import text_splits

    texts = text_splits("brown")["calibration"]
    stats = collect_calibration(model, tokenizer, texts, max_tokens=max_tokens, show_progress=show_progress)
    stats.source = f"{GENERIC_TEXT} ({stats.num_tokens or max_tokens:,} tokens)"
    return stats


@torch.no_grad()
def self_generated_calibration(
    model: torch.nn.Module,
    *,
    num_tokens: int = 16384,
    max_length: int = 512,
    batch_size: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    show_progress: bool = True,
) -> CalibrationStats:
    """Calibration without any text: the model writes its own. Sequences sampled from the model's own next-token
    distribution (from its BOS token, temperature 1, no top-k/top-p) follow the distribution the compressed head must
    reproduce, so their token counts, head-input statistics and predicted distribution stand in for generic text.
    Needs a model that can `generate` (a causal LM); see [`random_token_calibration`] for the others.

    Example:

    ```python
    >>> stats = self_generated_calibration(model, num_tokens=4096)  # doctest: +SKIP
    >>> stats.source  # doctest: +SKIP
    'text generated by the model itself (4,096 tokens)'
    ```
    """
    if num_tokens < 1 or max_length < 2 or batch_size < 1:
        raise ValueError("num_tokens and batch_size must be positive integers, max_length at least 2.")
    head = _output_head(model)
    can_generate = getattr(model, "can_generate", None)
    if head is None or not (callable(can_generate) and can_generate()):
        raise ValueError(f"{type(model).__name__} cannot generate text; use random_token_calibration instead.")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    generation = getattr(model, "generation_config", None)
    start = next(
        (
            t
            for t in (getattr(generation, "bos_token_id", None), config.bos_token_id, config.eos_token_id)
            if _is_id(t)
        ),
        0,
    )
    start = start[0] if isinstance(start, list) else start
    max_length = _window_length(model, max_length)
    num_sequences = max(1, -(-num_tokens // (max_length - 1)))
    device = model_device(model)
    vocab = model.get_input_embeddings().weight.shape[0]
    # a fresh generation config: the model's own (e.g. an instruct model's low temperature, repetition penalty) would
    # sample a different distribution than the one its head must reproduce
    sampling = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_length - 1,
        min_new_tokens=max_length - 1,
        pad_token_id=start,
        eos_token_id=getattr(generation, "eos_token_id", None),
    )
    was_training = model.training
    model.eval()
    sequences = []
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            batches = range(0, num_sequences, batch_size)
            for first in tqdm(batches, desc="generating calibration text", disable=not show_progress):
                prompt = torch.full((min(batch_size, num_sequences - first), 1), start, device=device)
                output = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=sampling)
                sequences.extend(output.cpu().tolist())
    finally:
        model.train(was_training)
    generated = torch.tensor([ids[1:] for ids in sequences])
    counts = torch.bincount(generated.flatten().clamp(0, vocab - 1), minlength=vocab)[:vocab]
    source = f"text generated by the model itself ({generated.numel():,} tokens)"
    return _window_statistics(model, head, sequences, counts, 4, 8192, show_progress, source)


def _is_id(token: Any) -> bool:
    return isinstance(token, int) or (isinstance(token, list) and bool(token) and isinstance(token[0], int))


#: Measured cost of calibrating on nothing, stated by the data-free warning: SmolLM2-135M-Instruct at ratio 10, Brown
#: test perplexity / the original's. Calibrated and self-generated: `python benchmarks/first_run.py`
#: (docs/results/first-run.md); random token ids: `python benchmarks/quality.py` (docs/results/quality.md).
DATA_FREE_COST = {"calibrated": 1.038, "data-free (self-generated)": 1.042, "data-free (random tokens)": 1.79}

#: Tokens `resolve_calibration` measures (of generic text, or generated by the model) when not told otherwise.
CALIBRATION_TOKENS = 16384


def resolve_calibration(
    model: torch.nn.Module,
    calibration: "CalibrationStats | str | None",
    tokenizer: Any = None,
    *,
    max_tokens: int | None = None,
    show_progress: bool = True,
) -> CalibrationStats:
    """The statistics `compress_model` calibrates on: `calibration` itself if given as [`CalibrationStats`];
    `"generic"`: [`generic_calibration`] with `tokenizer` (default: loaded from `model.name_or_path`); `None`, or
    `"generic"` without a tokenizer or the text (offline, nothing cached): data-free, the model's own text
    ([`self_generated_calibration`]) or, for a model that cannot generate, random token ids, with a warning that
    states the measured cost. `max_tokens` defaults to [`CALIBRATION_TOKENS`].

    Example:

    ```python
    >>> stats = resolve_calibration(model, "generic", tokenizer)  # doctest: +SKIP
    ```
    """
    if isinstance(calibration, CalibrationStats):
        return calibration
    max_tokens = max_tokens or CALIBRATION_TOKENS
    if calibration not in ("generic", None):
        raise ValueError(
            f"calibration must be 'generic', None (data-free) or CalibrationStats from collect_calibration; got "
            f"{calibration!r}."
        )
    if calibration == "generic" and tokenizer is None and not getattr(model, "name_or_path", None):
        reason = "the model has no name_or_path to load its tokenizer from (pass tokenizer=...)"
    elif calibration == "generic":
        try:
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
            return generic_calibration(model, tokenizer, max_tokens=max_tokens, show_progress=show_progress)
        except Exception as error:  # no tokenizer next to the model, or offline with no text cached
            reason = f"the generic calibration text could not be used ({type(error).__name__}: {error})"
    else:
        reason = "no calibration text was given"
    can_generate = getattr(model, "can_generate", None)
    if _output_head(model) is not None and callable(can_generate) and can_generate():
        stats = self_generated_calibration(model, num_tokens=max_tokens, show_progress=show_progress)
        kind = "data-free (self-generated)"
    else:
        stats, kind = random_token_calibration(model), "data-free (random tokens)"
    measured = (
        f"measured on SmolLM2-135M at ratio 10: {DATA_FREE_COST[kind]}x the original's perplexity on held-out text, "
        f"against {DATA_FREE_COST['calibrated']}x calibrated on generic text; docs/results/first-run.md"
    )
    logger.warning(
        f"Compressing {kind}: {reason}, so the model calibrates on {stats.source} ({measured}). Pass "
        "calibration='generic' with a tokenizer, or CalibrationStats from collect_calibration on your own text."
    )
    return stats
