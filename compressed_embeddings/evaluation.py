"""Model-agnostic evaluation helpers for (compressed) embedding matrices.

Everything in this module only relies on public model APIs (``model(input_ids=..., labels=...)``,
``model(**encoded_inputs)``), so it works the same way on an original model and on a model whose input
embedding has been replaced by a compressed one. Loading the texts and counting tokens live in
[`compressed_embeddings.texts`].
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ._utils import check_positive_int, model_device
from .texts import DOCUMENT_SEPARATOR, as_text_list

logger = logging.get_logger(__name__)

__all__ = [
    "FidelityReport",
    "PerplexityResult",
    "embedding_fidelity",
    "lm_eval_scores",
    "perplexity",
    "sentence_embedding_similarity",
]


# --------------------------------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerplexityResult:
    """Result of [`perplexity`].

    Args:
        perplexity (`float`): `exp(nll)`.
        nll (`float`): Token-weighted mean negative log-likelihood (natural log) over all scored tokens.
        num_tokens (`int`): Number of tokens whose prediction contributed to `nll`.
        num_windows (`int`): Number of windows that were run through the model.

    Example:

    ```python
    >>> PerplexityResult(perplexity=12.3, nll=2.51, num_tokens=1000, num_windows=4).to_dict()["num_tokens"]
    1000
    ```
    """

    perplexity: float
    nll: float
    num_tokens: int
    num_windows: int

    def to_dict(self) -> dict[str, Any]:
        """Returns the result as a plain (JSON-serialisable) dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class _Window:
    begin: int  # first token of the window (inclusive)
    end: int  # last token of the window (exclusive)
    target_length: int  # the last `target_length` tokens of the window are new (not scored by a previous window)

    @property
    def length(self) -> int:
        return self.end - self.begin

    @property
    def num_scored(self) -> int:
        # The first token of a window has no context inside the window, so it can never be predicted.
        return min(self.target_length, self.length - 1)


def _sliding_windows(num_tokens: int, max_length: int, stride: int) -> list[_Window]:
    """Standard Hugging Face sliding-window schedule (see the "Perplexity of fixed-length models" guide).

    Windows of `max_length` tokens start every `stride` tokens; each window only scores the tokens that were not
    covered by the previous window. With `stride < max_length` every token but the very first is scored exactly
    once; with `stride == max_length` the windows are independent chunks and the first token of each chunk is not
    scored. Windows without any scorable token (a trailing window of a single token) are dropped.
    """
    windows = []
    previous_end = 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + max_length, num_tokens)
        window = _Window(begin=begin, end=end, target_length=end - previous_end)
        if window.num_scored > 0:
            windows.append(window)
        previous_end = end
        if end == num_tokens:
            break
    return windows


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    *,
    max_length: int = 512,
    stride: int = 256,
    batch_size: int = 4,
    max_tokens: int | None = None,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> PerplexityResult:
    """Computes the causal-LM perplexity of `model` on `texts` with the sliding-window recipe.

    The documents are joined with `"\\n\\n"` ([`DOCUMENT_SEPARATOR`]) and tokenized once (with the tokenizer's
    special tokens, e.g. a leading BOS). The token stream is optionally truncated to `max_tokens`, then cut into
    windows of `max_length` tokens starting every `stride` tokens. Inside a window only the tokens that were not
    already scored by the previous window contribute (the overlap is labelled `-100` and only serves as context).
    The returned NLL is the exact token-weighted mean over all scored tokens, independent of `batch_size`.

    With `stride < max_length` every token except the first one is scored exactly once
    (`num_tokens == total_tokens - 1`); with `stride == max_length` the windows are independent chunks and the first
    token of each chunk is not scored (`num_tokens == total_tokens - num_windows`).

    Only `model(input_ids=..., labels=...)` is used, so original and compressed models are evaluated identically.
    The model is put in eval mode for the computation and restored to its previous mode afterwards.

    Args:
        model (`torch.nn.Module`): A causal language model returning a `loss` when given `labels`.
        tokenizer: The tokenizer matching `model`.
        texts (`str` or `Sequence[str]`): One text or several documents.
        max_length (`int`, *optional*, defaults to 512): Window length in tokens.
        stride (`int`, *optional*, defaults to 256): Number of tokens each window moves by
            (`0 < stride <= max_length`).
        batch_size (`int`, *optional*, defaults to 4): Number of (equal-length) windows per forward pass.
        max_tokens (`int`, *optional*): Keep only the first `max_tokens` tokens of the stream (for speed).
        device (`str` or `torch.device`, *optional*): Where to put the inputs; defaults to the model's device.
        show_progress (`bool`, *optional*, defaults to `True`): Whether to display a progress bar.

    Returns:
        [`PerplexityResult`]

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer  # doctest: +SKIP
    >>> from compressed_embeddings.evaluation import perplexity  # doctest: +SKIP
    >>> from compressed_embeddings.texts import load_texts  # doctest: +SKIP

    >>> model = AutoModelForCausalLM.from_pretrained("gpt2")  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained("gpt2")  # doctest: +SKIP
    >>> texts = load_texts("wiki.test.txt")  # doctest: +SKIP
    >>> result = perplexity(model, tokenizer, texts, max_length=1024, stride=512)  # doctest: +SKIP
    >>> print(f"ppl={result.perplexity:.2f} over {result.num_tokens} tokens")  # doctest: +SKIP
    ```
    """
    check_positive_int("max_length", max_length)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_tokens", max_tokens, allow_none=True)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
        raise ValueError(f"`stride` must be a positive integer, got {stride!r}.")
    if stride > max_length:
        raise ValueError(
            f"`stride` must be at most `max_length` ({max_length}) so that no token is skipped, got {stride}."
        )
    if max_length < 2:
        raise ValueError(f"`max_length` must be at least 2 (a window needs context and a target), got {max_length}.")

    documents = as_text_list(texts)
    text = DOCUMENT_SEPARATOR.join(documents)
    if not text.strip():
        raise ValueError(
            f"`texts` must contain non-empty text, got {len(documents)} empty/whitespace-only document(s)."
        )

    input_ids = torch.as_tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long).reshape(-1)
    if max_tokens is not None:
        input_ids = input_ids[:max_tokens]
    total_tokens = input_ids.numel()
    if total_tokens < 2:
        raise ValueError(
            f"`texts` must tokenize to at least 2 tokens to compute a perplexity, got {total_tokens} "
            f"(max_tokens={max_tokens})."
        )

    config = getattr(model, "config", None)
    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and max_length > max_positions:
        logger.warning(
            f"`max_length` ({max_length}) exceeds the model's `max_position_embeddings` ({max_positions}); "
            "results may be meaningless."
        )

    windows = _sliding_windows(total_tokens, max_length, stride)
    # Consecutive windows of the same length are batched together (only the last window can be shorter).
    batches: list[list[_Window]] = []
    for window in windows:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].length == window.length:
            batches[-1].append(window)
        else:
            batches.append([window])

    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    total_nll = 0.0
    total_scored = 0
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, desc="Perplexity", unit="batch", disable=not show_progress):
                batch_ids = torch.stack([input_ids[w.begin : w.end] for w in batch]).to(device)
                labels = batch_ids.clone()
                for row, window in enumerate(batch):
                    labels[row, : window.length - window.target_length] = -100
                num_scored = int((labels[:, 1:] != -100).sum())
                outputs = model(input_ids=batch_ids, labels=labels)
                loss = outputs.loss if hasattr(outputs, "loss") else outputs[0]
                if loss is None:
                    raise ValueError(f"{type(model).__name__} did not return a loss when given `labels`.")
                # The model returns the mean over the scored tokens of the batch: turn it back into a sum.
                total_nll += float(loss.double()) * num_scored
                total_scored += num_scored
    finally:
        model.train(was_training)

    nll = total_nll / total_scored
    result = PerplexityResult(perplexity=math.exp(nll), nll=nll, num_tokens=total_scored, num_windows=len(windows))
    logger.info(
        f"Perplexity {result.perplexity:.4f} (nll={nll:.6f}) over {total_scored} tokens, {len(windows)} windows."
    )
    return result


# --------------------------------------------------------------------------------------------------------------------
# Embedding fidelity
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FidelityReport:
    """Row-wise agreement between an original embedding matrix and its reconstruction, see [`embedding_fidelity`].

    Args:
        mean_cosine (`float`): Mean over rows of the cosine similarity between `e_i` and `ê_i`.
        min_cosine (`float`): Smallest row cosine similarity.
        relative_frobenius_error (`float`): `||E - Ê||_F / ||E||_F`.
        norm_ratio (`float`): Mean over rows with `||e_i|| > 0` of `||ê_i|| / ||e_i||`.
        frequency_weighted_cosine (`float`, *optional*): Row cosine weighted by token counts (`None` if no counts).

    Example:

    ```python
    >>> import torch
    >>> from compressed_embeddings.evaluation import embedding_fidelity
    >>> report = embedding_fidelity(torch.eye(3), torch.eye(3))
    >>> report.to_dict()["mean_cosine"]
    1.0
    ```
    """

    mean_cosine: float
    min_cosine: float
    relative_frobenius_error: float
    norm_ratio: float
    frequency_weighted_cosine: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as a plain (JSON-serialisable) dictionary."""
        return asdict(self)


def _row_cosines(a: torch.Tensor, b: torch.Tensor, norm_a: torch.Tensor, norm_b: torch.Tensor) -> torch.Tensor:
    """Row cosine similarity; 1.0 when both rows are zero, 0.0 when only one is."""
    a_zero, b_zero = norm_a == 0, norm_b == 0
    cosine = (a * b).sum(dim=1) / (norm_a * norm_b).clamp_min(torch.finfo(a.dtype).tiny)
    cosine = cosine.clamp(-1.0, 1.0)
    cosine = torch.where(a_zero | b_zero, torch.zeros_like(cosine), cosine)
    return torch.where(a_zero & b_zero, torch.ones_like(cosine), cosine)


def embedding_fidelity(
    original: torch.Tensor,
    reconstructed: "torch.Tensor | Callable[[int, int], torch.Tensor]",
    *,
    token_counts: torch.Tensor | None = None,
    chunk_size: int = 2048,
) -> FidelityReport:
    """Measures how faithfully `reconstructed` reproduces the embedding matrix `original` (both `V x d`).

    Rows are processed `chunk_size` at a time in float64, so even a `262k x 4096` bf16 matrix never has more than
    one chunk materialised in float64. The reconstructed chunk is moved to the device of `original`.

    Args:
        original (`torch.Tensor`): Reference embedding matrix `E` of shape `(V, d)`.
        reconstructed (`torch.Tensor` or callable): Approximation `Ê` of the same shape, or a function
            `(start, stop) -> rows start:stop of Ê` that decodes rows on demand (`Ê` is then never materialised).
        token_counts (`torch.Tensor`, *optional*): Non-negative weights of shape `(V,)` (e.g. from
            [`token_frequencies`]) for `frequency_weighted_cosine`.
        chunk_size (`int`, *optional*, defaults to 2048): Number of rows processed at once.

    Returns:
        [`FidelityReport`]

    Example:

    ```python
    >>> import torch
    >>> from compressed_embeddings.evaluation import embedding_fidelity
    >>> E = torch.randn(1000, 64)
    >>> report = embedding_fidelity(E, E + 0.01 * torch.randn_like(E))
    >>> report.mean_cosine > 0.99
    True
    ```
    """
    rows_of = None
    if callable(reconstructed) and not isinstance(reconstructed, torch.Tensor):
        rows_of, reconstructed = reconstructed, original  # shape checks below then compare `original` with itself
    if not isinstance(original, torch.Tensor) or not isinstance(reconstructed, torch.Tensor):
        raise TypeError(
            f"`original` and `reconstructed` must be tensors, got {type(original).__name__} and "
            f"{type(reconstructed).__name__}."
        )
    if original.dim() != 2 or original.shape != reconstructed.shape:
        raise ValueError(
            "`original` and `reconstructed` must be 2-D matrices of the same shape (V, d), got "
            f"{tuple(original.shape)} and {tuple(reconstructed.shape)}."
        )
    check_positive_int("chunk_size", chunk_size)
    num_rows = original.shape[0]
    if num_rows == 0:
        raise ValueError(f"`original` must have at least one row, got shape {tuple(original.shape)}.")

    device = original.device
    weights = None
    if token_counts is not None:
        if not isinstance(token_counts, torch.Tensor):
            token_counts = torch.as_tensor(token_counts)
        if token_counts.shape != (num_rows,):
            raise ValueError(
                f"`token_counts` must have shape ({num_rows},) (one count per row), got {tuple(token_counts.shape)}."
            )
        weights = token_counts.detach().to(device=device, dtype=torch.float64)
        if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
            raise ValueError("`token_counts` must be finite and non-negative.")
        if float(weights.sum()) == 0.0:
            raise ValueError("`token_counts` must not be all zeros.")

    cosine_sum = 0.0
    min_cosine = math.inf
    weighted_cosine_sum = 0.0
    squared_error = 0.0
    squared_norm = 0.0
    norm_ratio_sum = 0.0
    norm_ratio_count = 0
    with torch.no_grad():
        for start in range(0, num_rows, chunk_size):
            stop = min(start + chunk_size, num_rows)
            a = original[start:stop].detach().to(dtype=torch.float64)
            b = (rows_of(start, stop) if rows_of else reconstructed[start:stop]).detach()
            b = b.to(device=device, dtype=torch.float64)
            norm_a = torch.linalg.vector_norm(a, dim=1)
            norm_b = torch.linalg.vector_norm(b, dim=1)

            cosine = _row_cosines(a, b, norm_a, norm_b)
            cosine_sum += float(cosine.sum())
            min_cosine = min(min_cosine, float(cosine.min()))
            if weights is not None:
                weighted_cosine_sum += float((weights[start:stop] * cosine).sum())

            squared_error += float(torch.linalg.vector_norm(a - b).square())
            squared_norm += float(norm_a.square().sum())

            nonzero = norm_a > 0
            norm_ratio_sum += float((norm_b[nonzero] / norm_a[nonzero]).sum())
            norm_ratio_count += int(nonzero.sum())

    if squared_norm > 0:
        relative_error = math.sqrt(squared_error) / math.sqrt(squared_norm)
    else:
        relative_error = 0.0 if squared_error == 0 else math.inf
    report = FidelityReport(
        mean_cosine=cosine_sum / num_rows,
        min_cosine=min_cosine,
        relative_frobenius_error=relative_error,
        norm_ratio=norm_ratio_sum / norm_ratio_count if norm_ratio_count else math.nan,
        frequency_weighted_cosine=weighted_cosine_sum / float(weights.sum()) if weights is not None else None,
    )
    logger.info(f"Embedding fidelity: {report.to_dict()}")
    return report


# --------------------------------------------------------------------------------------------------------------------
# Sentence embeddings (encoders)
# --------------------------------------------------------------------------------------------------------------------


def _pad_right(features: dict[str, list[list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pads a batch (works even for tokenizers without a pad token: padding is masked out anyway)."""
    longest = max(len(ids) for ids in features["input_ids"])
    padded = {}
    for key, sequences in features.items():
        if not sequences or not isinstance(sequences[0], list):
            continue
        value = pad_token_id if key == "input_ids" else 0
        padded[key] = torch.tensor([seq + [value] * (longest - len(seq)) for seq in sequences], dtype=torch.long)
    if "attention_mask" not in padded:
        lengths = torch.tensor([len(ids) for ids in features["input_ids"]])
        padded["attention_mask"] = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    return padded


def _mean_pooled(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    device = model_device(model)
    inputs = {key: value.to(device) for key, value in inputs.items()}
    outputs = model(**inputs)
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:  # e.g. a *ForCausalLM / *ForMaskedLM head model
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
    mask = inputs["attention_mask"].to(torch.float64).unsqueeze(-1)
    summed = (hidden.to(torch.float64) * mask).sum(dim=1)
    return (summed / mask.sum(dim=1).clamp_min(1.0)).cpu()


def sentence_embedding_similarity(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    tokenizer: Any,
    sentences: str | Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 128,
    show_progress: bool = True,
) -> dict[str, float | int]:
    """Compares the sentence embeddings of two encoders (e.g. an original and a compressed all-MiniLM-L6-v2).

    Each sentence is embedded by both models as the attention-mask-weighted mean of the last hidden states
    (sentence-transformers style mean pooling, without normalisation); the per-sentence cosine similarity between the
    two embeddings is then summarised. Both models receive exactly the same tokenized inputs and run on their own
    device in eval mode (their previous modes are restored).

    Args:
        model_a (`torch.nn.Module`): Reference model.
        model_b (`torch.nn.Module`): Model to compare (same tokenizer, same hidden size).
        tokenizer: Tokenizer shared by both models.
        sentences (`str` or `Sequence[str]`): Sentences to embed.
        batch_size (`int`, *optional*, defaults to 32): Sentences per forward pass.
        max_length (`int`, *optional*, defaults to 128): Sentences are truncated to this many tokens.
        show_progress (`bool`, *optional*, defaults to `True`): Whether to display a progress bar.

    Returns:
        `dict[str, float | int]`: `mean_cosine`, `min_cosine`, `median_cosine` and `num_sentences`.

    Example:

    ```python
    >>> from transformers import AutoModel, AutoTokenizer  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> original = AutoModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> sentences = ["A man is eating food."]  # doctest: +SKIP
    >>> sentence_embedding_similarity(original, compressed, tokenizer, sentences)["mean_cosine"]  # doctest: +SKIP
    ```
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_length", max_length)
    sentences = as_text_list(sentences, "sentences")
    if not sentences:
        raise ValueError("`sentences` must contain at least one sentence, got an empty sequence.")
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
    pad_token_id = 0 if pad_token_id is None else pad_token_id

    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    cosines = []
    try:
        with torch.inference_mode():
            starts = range(0, len(sentences), batch_size)
            for start in tqdm(starts, desc="Sentence embeddings", unit="batch", disable=not show_progress):
                features = tokenizer(
                    sentences[start : start + batch_size], truncation=True, max_length=max_length, verbose=False
                )
                inputs = _pad_right(dict(features), pad_token_id)
                pooled_a = _mean_pooled(model_a, inputs)
                pooled_b = _mean_pooled(model_b, inputs)
                if pooled_a.shape != pooled_b.shape:
                    raise ValueError(
                        f"The models produce embeddings of different sizes: {tuple(pooled_a.shape)} and "
                        f"{tuple(pooled_b.shape)}."
                    )
                norm_a = torch.linalg.vector_norm(pooled_a, dim=1)
                norm_b = torch.linalg.vector_norm(pooled_b, dim=1)
                cosines.append(_row_cosines(pooled_a, pooled_b, norm_a, norm_b))
    finally:
        model_a.train(modes[0])
        model_b.train(modes[1])

    cosine = torch.cat(cosines)
    return {
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "median_cosine": float(torch.quantile(cosine, 0.5)),
        "num_sentences": len(sentences),
    }


# --------------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness
# --------------------------------------------------------------------------------------------------------------------

#: What `lm_eval_scores` says when lm-evaluation-harness is not installed.
LM_EVAL_MISSING = (
    "lm-evaluation-harness is not installed: pip install 'compressed-embeddings[lm-eval]' (or lm-eval>=0.4.13,<0.5)."
)


def lm_eval_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: str | Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 1,
) -> dict[str, dict[str, float]]:
    """Scores of a causal language model (compressed or not) on [lm-evaluation-harness](https://github.com/EleutherAI/lm-evaluation-harness)
    tasks: the model object itself is wrapped in lm-eval's `HFLM` and run by `lm_eval.simple_evaluate`, so a
    compressed model is scored exactly as it runs (codes, decoder and tied head), whatever its load path.

    Args:
        model (`torch.nn.Module`): A causal LM (`AutoModelForCausalLM`), on the device it should run on.
        tokenizer: Its tokenizer.
        tasks (`str` or `Sequence[str]`): lm-eval task (or group) names; a string is split at commas.
        include_path (`str` or `Path`, *optional*): A folder of task YAML files of your own (lm-eval's
            `--include_path`), e.g. a task over local text, which runs offline.
        limit (`int` or `float`, *optional*): At most this many documents per task (a fraction below 1: that share);
            for a quick look, not for a reported score.
        num_fewshot (`int`, *optional*): Few-shot examples per prompt (default: each task's own).
        batch_size (`int`, *optional*, defaults to 1): Requests per forward pass.

    Returns:
        `dict[str, dict[str, float]]`: for each task, its metrics as lm-eval names them (`"acc,none"`,
        `"acc_stderr,none"`, `"word_perplexity,none"`, ...; stderr values lm-eval does not compute are left out).

    Raises:
        `ImportError`: lm-eval is not installed (`pip install 'compressed-embeddings[lm-eval]'`).
        `ValueError`: a task lm-eval does not know (with `include_path`: nor that folder).

    Example:

    ```python
    >>> from compressed_embeddings.evaluation import lm_eval_scores
    >>> scores = lm_eval_scores(model, tokenizer, "my_task", include_path="my_tasks/")  # doctest: +SKIP
    >>> scores["my_task"]["acc,none"]  # doctest: +SKIP
    0.5
    ```
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise ImportError(LM_EVAL_MISSING) from error
    check_positive_int("batch_size", batch_size)
    names = [name.strip() for name in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    names = [name for name in names if name]
    if not names:
        raise ValueError("`tasks` names no lm-eval task.")
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"include_path {include_path} is not a folder of task YAML files.")
    task_manager = TaskManager(include_path=None if include_path is None else str(include_path))
    known = set(task_manager.all_tasks)
    unknown = [name for name in names if name not in known]
    if unknown:
        where = f" nor in {include_path}" if include_path is not None else ""
        raise ValueError(f"lm-eval knows no task {', '.join(unknown)}{where} (`lm_eval ls tasks` lists them).")
    # backend="causal": lm-eval does not know the compressed model types, which are causal LMs.
    lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=task_manager,
        log_samples=False,
    )
    return {
        task: {
            metric: float(value)
            for metric, value in metrics.items()
            if "," in metric and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        for task, metrics in output["results"].items()
    }
