"""The inference benchmark's statistics and table (benchmarks/inference.py), on made-up timings."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "inference_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "inference.py"
)
inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inference)


@pytest.mark.parametrize(
    "n, rank",
    # Ranks of the usual tables of distribution-free 95 % intervals for a median: (x_rank, x_{n + 1 - rank}).
    [(6, 1), (7, 1), (8, 1), (9, 2), (11, 2), (12, 3), (20, 6), (30, 10)],
)
def test_median_interval_uses_the_order_statistics_of_the_published_tables(n, rank):
    values = [float(i) for i in range(n, 0, -1)]  # unsorted on purpose
    assert inference.median_interval(values) == (float(rank), float(n + 1 - rank))


def test_paired_ratios_pair_samples_by_repetition():
    original = {"prefill_s": [1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 1.0], "decode_tokens_per_s": [10.0] * 7}
    compressed = {"prefill_s": [0.9, 1.8, 3.6, 0.9, 1.8, 3.6, 1.0], "extra_s": [1.0] * 7}
    medians, intervals = inference.paired_ratios(compressed, original)
    # Each ratio is within its repetition: the slow drift of the original's times cancels.
    assert medians == {"prefill_s": pytest.approx(0.9)}
    assert intervals["prefill_s"] == pytest.approx((0.9, 1.0))


def test_interleaved_calls_take_turns_and_return_the_statistic():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    seconds = inference._interleaved(functions, 3)
    assert calls == ["a", "b", "c"] * 3
    assert set(seconds) == {"a", "b", "c"} and all(value >= 0 for value in seconds.values())


def _row(scale: float, lookup: float, tensor_mib: float = 500, peak_mib: float = 900) -> dict:
    keys = (*inference.FORWARD_KEYS, "decode_tokens_per_s")
    row = {key: scale for key in keys} | {"lookup_and_head_1x512_s": lookup}
    row |= {"rss_after_load": 2**20, "peak_rss_generation": peak_mib * 2**20, "load_s": 0.1}
    row |= {"checkpoint_bytes": tensor_mib * 2**20, "tensor_bytes": tensor_mib * 2**20}
    row["ratios"] = {key: scale for key in keys}
    row["ratio_intervals"] = {key: (scale - 0.01, scale + 0.01) for key in keys}
    return row


def test_the_table_shows_the_control_the_intervals_and_the_prefill_work_saved():
    rows = {
        "original": _row(1.0, 0.008),
        inference.CONTROL: _row(1.0, 0.008),
        "svd-cr10": _row(0.99, 0.0005, tensor_mib=400, peak_mib=810),
        "autoencoder-cr10": _row(1.0, 0.001, tensor_mib=400, peak_mib=800),
        "transform-coding-cr10": _row(1.12, 0.001, tensor_mib=400, peak_mib=830),
    }
    rows["transform-coding-cr10"] |= {"stored_bytes_per_row": 115.2, "runtime_bytes_per_row": 300.4}
    meta = {"command": "python benchmarks/inference.py", "machine": "test", "repeats": 7, "ae_epochs": 1}
    text = inference.render(meta, rows)
    assert f"| {inference.CONTROL} (control) |" in text
    assert "| svd-cr10 | 0.990 [0.980, 1.000] |" in text
    assert "which saves 7.0-7.5 ms per prefill, 0.7-0.8 % of the original's 1x512 prefill" in text
    assert f"- {inference.CONTROL}:" not in text  # no size check for the control: it is the original
    # peak RSS saving against the embedding bytes saved: 90 of 100 MiB (OK), 70 of 100 (below the 80 % bar)
    assert "90 MiB below the original = 90 % of the 100 MiB saved (bar 80 %): OK" in text
    assert "70 MiB below the original = 70 % of the 100 MiB saved (bar 80 %): BELOW" in text
    assert "decode 1.12x (bar 1.10x): OK; lookup + head 1.00 ms vs 8.00: faster" in text
    assert "| 115 / 300 |" in text and "in float32" in text
