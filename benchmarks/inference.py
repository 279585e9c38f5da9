"""Inference speed and memory of compressed vs original models, measured in one run.

    python benchmarks/inference.py [--repeats 5] [--ratios 5 10] [--tc-ratios 10 20] [--output docs/results]
    python benchmarks/inference.py --dtype bfloat16 --methods svd transform_coding --ratios 10 \
        --name inference-bf16                     # checkpoints written and run in bf16 (as Hub LMs ship)
    python benchmarks/inference.py --architecture gemma3-270m --dtype bfloat16 --methods transform_coding \
        --name inference-gemma3-270m              # a 262,144 x 640 embedding, random weights
    python benchmarks/inference.py --device cuda --dtype bfloat16 --random-weights --inner-repeats 10 \
        --output docs/results --name inference-gpu        # on a GPU (what docs/results/inference-gpu.md ran)

For the original, for SVD and the paper's autoencoder at each of `--ratios` and for transform coding at each of
`--tc-ratios` (tied head compressed; `--methods` picks among them):
- prefill latency, generate-style (`logits_to_keep=1`) and full logits, for batch 1 x 512 and 8 x 128 tokens;
- greedy decode tokens/s (128 new tokens after a 32-token prompt);
- resident memory after load and the peak during generation, and load time (each model in a fresh process);
- checkpoint bytes on disk vs the theoretical size (every stored tensor once), and the embedding's bytes per row
  stored and while running (transform coding's runtime layout: `packed_runtime`);
- the time of the only work a generate-style prefill does differently: the lookup of the 1 x 512 prompt and the
  head at its last position.
Timings are medians over interleaved repetitions (model order rotates every repetition; within a repetition the
models take turns call by call on the same input), and each ratio is the median over repetitions of compressed /
original within the same repetition, with a distribution-free 95 % confidence interval. A control, the original
loaded a second time and timed as if it were a compressed model, shows how far the machine's noise moves a ratio.
Writes `NAME.md` and `NAME.json` into `--output`.

`--dtype` is the dtype the checkpoints are written in and the models run in: the original is converted once (as a
bf16 Hub checkpoint would be stored) and compressed from that, so that every model is memory-mapped from a file of
its own dtype. Speed does not depend on how well the codes were trained (the shapes are the same), so the
autoencoder is trained for `--ae-epochs` (default 1) instead of the paper's 30 to keep the run short, and transform
coding is data-free (its stored layout, the preset's int8 decoder; calibration changes values, not shapes); the
quality benchmark measures the full recipes.

`--architecture gemma3-270m` builds Gemma-3-270M's architecture (262,144 x 640 tied embedding, 63 % of the weights)
with random weights (seed 0): no real Gemma checkpoint is reachable here, and speed and memory depend only on the
shapes. `--random-weights` does the same for SmolLM2 (its config, random weights).

`--device cuda` runs the models on the GPU (timings synchronise the device; memory is the CUDA allocator's
`memory_allocated` after load and `max_memory_allocated` during generation instead of the process's RSS).
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROMPT_TOKENS = 32
NEW_TOKENS = 128
CPU = torch.device("cpu")
FORWARD_KEYS = ("prefill_1x512_s", "prefill_8x128_s", "forward_all_logits_1x512_s", "forward_all_logits_8x128_s")
# The original loaded a second time and timed as if it were a compressed model: its "ratios" would be 1.00 on a
# quiet machine, so they show how far this machine's noise moves a ratio.
CONTROL = "original-again"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


GEMMA3_270M = {  # google/gemma-3-270m's text config (shapes only)
    "vocab_size": 262144,
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "max_position_embeddings": 32768,
    "sliding_window": 512,
    "query_pre_attn_scalar": 256,
    "tie_word_embeddings": True,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
}
ARCHITECTURES = {"smollm2": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma-3-270M"}
DEFAULT_METHODS = ("svd", "autoencoder", "transform_coding")


def original(work: Path, architecture: str, dtype: str, random_weights: bool) -> Path:
    """The original model as a checkpoint in `dtype`, built once in `work`: SmolLM2-135M-Instruct (the package's
    real weights, or its config with random weights, seed 0) or Gemma-3-270M's architecture (random weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM, Gemma3TextConfig, GenerationConfig

    from compressed_embeddings.assets import smollm2_path

    random_weights = random_weights or architecture != "smollm2"
    suffix = "-random" if random_weights and architecture == "smollm2" else ""
    folder = work / f"original-{architecture}-{dtype}{suffix}"
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(0)
        if architecture == "gemma3-270m":
            config = Gemma3TextConfig(**GEMMA3_270M)
            model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
            model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0)
        elif random_weights:
            source = smollm2_path()  # only its config.json and generation_config.json are read
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=DTYPES[dtype])
            model.generation_config = GenerationConfig.from_pretrained(source)
        else:
            model = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=DTYPES[dtype])
        model.save_pretrained(folder)
    return folder


def prepare(
    work: Path,
    ratios: list[float],
    ae_epochs: int,
    random_weights: bool = False,
    dtype: str = "float32",
    architecture: str = "smollm2",
    methods: tuple[str, ...] = DEFAULT_METHODS,
    tc_ratios: tuple[float, ...] = (10.0, 20.0),
) -> dict[str, Path]:
    """The original folder and one compressed checkpoint per (method, ratio), all in `dtype`, written into `work`
    (compressed checkpoints are rebuilt every run, so that they come from this commit's code)."""
    from transformers import AutoModelForCausalLM

    from compressed_embeddings import CompressedEmbeddingConfig, compress_model

    source = original(work, architecture, dtype, random_weights)
    folders = {"original": source, CONTROL: source}
    plan = [(m, r) for r in ratios for m in methods if m != "transform_coding"]
    plan += [("transform_coding", r) for r in tc_ratios if "transform_coding" in methods]
    for method, ratio in plan:
        name = f"{method.replace('_', '-')}-cr{ratio:g}"
        folder = work / f"{source.name.removeprefix('original-')}-{name}"
        model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
        if method == "transform_coding":  # the preset's stored layout (int8 decoder); no text to fit to
            config = CompressedEmbeddingConfig.preset(method, compression_ratio=ratio, kl_steps=0)
        else:
            extra = {"epochs": ae_epochs} if method == "autoencoder" else {}
            config = CompressedEmbeddingConfig(method=method, compression_ratio=ratio, **extra)
        model = compress_model(model, config, show_progress=False)
        model.save_pretrained(folder)
        report = model.compression_report
        sizes = {"stored_bytes_per_row": report.stored_bytes / report.num_embeddings}
        sizes["runtime_bytes_per_row"] = report.runtime_bytes / report.num_embeddings
        (folder / "sizes.json").write_text(json.dumps(sizes))
        folders[name] = folder
        print(f"[{time.strftime('%H:%M:%S')}] built {name}: {report}", file=sys.stderr, flush=True)
    return folders


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that wall-clock timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


INNER_STATISTICS = {"min": min, "median": statistics.median}
LOOKUP_AND_HEAD_CALLS = 10


def _time(function, device: torch.device = CPU) -> float:
    """Seconds one call of `function` takes (the device's queued work included)."""
    _synchronize(device)
    start = time.perf_counter()
    function()
    _synchronize(device)
    return time.perf_counter() - start


def _interleaved(functions: dict, calls: int, device: torch.device = CPU, statistic: str = "min") -> dict:
    """`statistic` (the fastest, or the median) of `calls` timed calls of each function, the functions taking turns
    call by call, so that every model's calls span the same stretch of the machine's time."""
    times = {name: [] for name in functions}
    for _ in range(calls):
        for name, function in functions.items():
            times[name].append(_time(function, device))
    return {name: INNER_STATISTICS[statistic](values) for name, values in times.items()}


def time_all(
    folders: dict[str, Path],
    repeats: int,
    device: torch.device = CPU,
    dtype: torch.dtype = torch.float32,
    inner_repeats: int = 1,
    inner_statistic: str = "min",
) -> dict[str, dict[str, list[float]]]:
    """Interleaved timings of every model, all loaded in this process (each forward timing: the `inner_statistic`
    of `inner_repeats` calls)."""
    from transformers import AutoModelForCausalLM

    import compressed_embeddings  # noqa: F401

    models = {
        name: AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        for name, path in folders.items()
    }
    generator = torch.Generator().manual_seed(0)
    vocab = models["original"].config.vocab_size
    inputs = {
        "1x512": torch.randint(0, vocab, (1, 512), generator=generator).to(device),
        "8x128": torch.randint(0, vocab, (8, 128), generator=generator).to(device),
    }
    prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS), generator=generator).to(device)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    names = list(models)
    with torch.inference_mode():
        for model in models.values():  # warm-up (on a GPU: every shape once, so kernels are chosen and loaded)
            model(inputs["8x128"][:, :16], logits_to_keep=1)
            model.generate(prompt, max_new_tokens=4, do_sample=False)
            if device.type != "cpu":
                for ids in inputs.values():
                    model(ids, logits_to_keep=1)
                    model(ids)
                model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
        for repeat in range(repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for shape, ids in inputs.items():
                for key, keep in ((f"prefill_{shape}_s", 1), (f"forward_all_logits_{shape}_s", 0)):
                    calls = {name: lambda m=models[name], i=ids, k=keep: m(i, logits_to_keep=k) for name in order}
                    for name, seconds in _interleaved(calls, inner_repeats, device, inner_statistic).items():
                        results[name].setdefault(key, []).append(seconds)
            # The only work a compressed model's prefill does differently: the prompt's lookup and the head at the
            # last position (the layers in between are the original's). Short calls: the fastest of several.
            calls = {name: lambda m=models[name]: _lookup_and_head(m, inputs["1x512"]) for name in order}
            for name, seconds in _interleaved(calls, LOOKUP_AND_HEAD_CALLS, device).items():
                results[name].setdefault("lookup_and_head_1x512_s", []).append(seconds)
            for name in order:
                model, record = models[name], results[name]
                _synchronize(device)
                start = time.perf_counter()
                output = model.generate(
                    prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0
                )
                _synchronize(device)
                elapsed = time.perf_counter() - start
                record.setdefault("decode_tokens_per_s", []).append((output.shape[1] - PROMPT_TOKENS) / elapsed)
            print(f"[{time.strftime('%H:%M:%S')}] repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)
    return results


def _lookup_and_head(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The input lookup of `input_ids` and the output head at their last position, as a prefill runs them."""
    embeddings = model.get_input_embeddings()(input_ids)
    return model.get_output_embeddings()(embeddings[:, -1:])


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval for the median of `values`: the j-th smallest and j-th largest value,
    with j the largest rank whose coverage (`1 - 2 P(B < j)`, `B ~ Binomial(n, 1/2)`) is at least `confidence`.
    Below 6 values even the whole range covers less than 95 %; it is returned all the same."""
    ordered, n = sorted(values), len(values)
    rank = 1
    while rank < n // 2 and 1 - 2 * sum(math.comb(n, i) for i in range(rank + 1)) / 2**n >= confidence:
        rank += 1
    return ordered[rank - 1], ordered[n - rank]


def paired_ratios(
    samples: dict[str, list[float]], original: dict[str, list[float]]
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """For each timing, the median over repetitions of (this model's sample / the original's sample of the same
    repetition), and its 95 % confidence interval: pairs measured seconds apart, so that slow drifts of a shared
    machine cancel out."""
    pairs = {key: [a / b for a, b in zip(values, original[key])] for key, values in samples.items() if key in original}
    medians = {key: statistics.median(ratios) for key, ratios in pairs.items()}
    return medians, {key: median_interval(ratios) for key, ratios in pairs.items()}


MEMORY_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
import compressed_embeddings  # noqa: F401
from transformers import AutoModelForCausalLM

folder, device, dtype = sys.argv[1], torch.device(sys.argv[2]), getattr(torch, sys.argv[3])
cuda = device.type == "cuda"

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
if cuda:  # create the CUDA context before the clock starts: it is not part of loading the model
    torch.ones(1, device=device)
    torch.cuda.synchronize(device)
    base_allocated = torch.cuda.memory_allocated(device)
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
if cuda:
    torch.cuda.synchronize(device)
load_s = time.perf_counter() - start
result = {"load_s": load_s, "rss_after_load": status("VmRSS:")}
unique = {t.data_ptr(): t for t in model.state_dict().values()}  # a tied head shares the embedding's storage
result["parameter_bytes"] = sum(t.numel() * t.element_size() for t in unique.values())
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
if cuda:
    result["cuda_allocated_after_load"] = torch.cuda.memory_allocated(device) - base_allocated
    torch.cuda.reset_peak_memory_stats(device)
prompt = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0)).to(device)
with torch.inference_mode():
    model.generate(prompt, max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
if cuda:
    torch.cuda.synchronize(device)
    result["cuda_peak_generation"] = torch.cuda.max_memory_allocated(device) - base_allocated
result["peak_rss_generation"] = status("VmHWM:")
print(json.dumps(result))
"""


def memory(folder: Path, device: str = "cpu", dtype: str = "float32") -> dict[str, float]:
    """Load time and memory of one model, in a fresh process: resident memory (RSS) on the CPU, and on a CUDA
    device the bytes the CUDA allocator holds after load and at its peak during generation."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(folder), device, dtype], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory probe of {folder} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def checkpoint_bytes(folder: Path) -> dict[str, int]:
    """Bytes of the safetensors files on disk, and the theoretical size: every stored tensor once."""
    from safetensors import safe_open

    on_disk, theoretical = 0, 0
    for file in sorted(folder.glob("*.safetensors")):
        on_disk += file.stat().st_size
        with safe_open(str(file), "pt") as checkpoint:
            for key in checkpoint.keys():
                tensor = checkpoint.get_slice(key)
                shape = tensor.get_shape()
                numel = 1
                for size in shape:
                    numel *= size
                theoretical += numel * {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1}[tensor.get_dtype()]
    return {"checkpoint_bytes": on_disk, "tensor_bytes": theoretical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ratios", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--ae-epochs", type=int, default=1)
    parser.add_argument("--work", default=str(REPO / "outputs" / "bench-inference"))
    parser.add_argument("--output", default=str(REPO / "docs" / "results"))
    parser.add_argument("--name", default="inference", help="Results file stem: NAME.md and NAME.json.")
    parser.add_argument("--device", default="cpu", help="torch device to run on: cpu (default), cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default="float32", help="dtype the checkpoints are written and run in."
    )
    parser.add_argument("--architecture", choices=list(ARCHITECTURES), default="smollm2")
    parser.add_argument("--methods", nargs="+", choices=list(DEFAULT_METHODS), default=list(DEFAULT_METHODS))
    parser.add_argument("--tc-ratios", type=float, nargs="+", default=[10.0, 20.0], help="Transform coding ratios.")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="Build the original from the SmolLM2 config with random weights (same shapes; for machines without "
        "the real checkpoint). Speed and memory do not depend on the values.",
    )
    parser.add_argument(
        "--inner-repeats", type=int, default=1, help="Forward timings: this many calls per repetition."
    )
    parser.add_argument(
        "--inner-statistic",
        choices=list(INNER_STATISTICS),
        default="min",
        help="Forward timings: the fastest (default: slower calls measure interference from the machine, not the "
        "model) or the median of the --inner-repeats calls.",
    )
    parser.add_argument("--render-only", action="store_true", help="Re-write NAME.md from NAME.json.")
    args = parser.parse_args()
    output = Path(args.output)
    if args.render_only:
        saved = json.loads((output / f"{args.name}.json").read_text())
        (output / f"{args.name}.md").write_text(render(saved["meta"], saved["rows"]))
        return

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    folders = prepare(
        Path(args.work), args.ratios, args.ae_epochs, args.random_weights, args.dtype, args.architecture,
        tuple(args.methods), tuple(args.tc_ratios),
    )  # fmt: skip
    print(f"[{time.strftime('%H:%M:%S')}] models ready: {', '.join(folders)}", file=sys.stderr, flush=True)
    timings = time_all(folders, args.repeats, device, DTYPES[args.dtype], args.inner_repeats, args.inner_statistic)
    Path(args.work).mkdir(parents=True, exist_ok=True)  # the raw samples, kept even if a later step fails
    (Path(args.work) / f"{args.name}-timings.json").write_text(json.dumps(timings))
    rows = {}
    for name, folder in folders.items():
        rows[name] = {key: statistics.median(values) for key, values in timings[name].items()}
        rows[name].update(memory(folder, args.device, args.dtype))
        print(f"[{time.strftime('%H:%M:%S')}] memory probe of {name} done", file=sys.stderr, flush=True)
        rows[name].update(checkpoint_bytes(folder))
        if (folder / "sizes.json").exists():
            rows[name].update(json.loads((folder / "sizes.json").read_text()))
        rows[name]["samples"] = {key: values for key, values in timings[name].items()}
    base = rows["original"]
    for name, row in rows.items():
        row["ratios"] = {
            key: row[key] / base[key]
            for key in row
            if isinstance(row[key], float | int) and key not in ("samples",) and base.get(key)
        }
        medians, intervals = paired_ratios(timings[name], timings["original"])
        row["ratios"].update(medians)
        row["ratio_intervals"] = intervals
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
    machine += f"{torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = (
            f"one {torch.cuda.get_device_name(device)} "
            f"({torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}; "
            + machine
        )
    meta = {
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "repeats": args.repeats,
        "inner_repeats": args.inner_repeats,
        "inner_statistic": args.inner_statistic,
        "ae_epochs": args.ae_epochs,
        "device": str(device),
        "dtype": args.dtype,
        "architecture": args.architecture,
        "weights": "real"
        if args.architecture == "smollm2" and not args.random_weights
        else f"random ({ARCHITECTURES[args.architecture]} config, seed 0)",
        "transformers": transformers_version(),
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (output / f"{args.name}.md").write_text(render(meta, rows))
    print(render(meta, rows))


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def _inner(meta: dict) -> str:
    """How a forward timing sums up its calls (runs before `--inner-statistic` existed took the median)."""
    return {"min": "fastest", "median": "median"}[meta.get("inner_statistic", "median")]


#: The issue's bars for a running compressed model: peak RSS saving as a share of the embedding bytes saved (the
#: 262,144-row vocabulary: 60 %), and greedy decode speed of transform coding.
RSS_SAVING_SHARE = {"smollm2": 0.8, "gemma3-270m": 0.6}
DECODE_SPEEDUP = 1.10


def render(meta: dict, rows: dict) -> str:
    if "cuda_peak_generation" in rows["original"]:
        return render_cuda(meta, rows)
    architecture = meta.get("architecture", "smollm2")
    dtype = meta.get("dtype", "float32")
    weights = meta.get("weights", "real")
    lines = [
        f"# Inference: {ARCHITECTURES[architecture]} in {dtype}, original vs compressed embedding",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Medians of {meta['repeats']} interleaved repetitions (each forward timing is itself the {_inner(meta)} of "
        f"{meta.get('inner_repeats', 1)} calls); timing ratios are medians over the repetitions of "
        "compressed / original within the same repetition (memory and size: ratios of the values). "
        f"Every checkpoint is stored in {dtype} and the models run in {dtype}. "
        + (
            "The original is the dequantised GGUF checkpoint the package ships. "
            if weights == "real"
            else f"**Random weights** with {ARCHITECTURES[architecture]}'s architecture (seed 0), not a real "
            "checkpoint: speed and memory depend only on the shapes. "
        )
        + f"The autoencoder is trained for {meta['ae_epochs']} epoch(s) here and transform coding is data-free: speed "
        "and memory do not depend on training.",
        "",
        "| model | prefill 1x512 (s) | prefill 8x128 (s) | full logits 1x512 (s) | decode tok/s | "
        "lookup + head in prefill 1x512 (ms) | RSS after load (MiB) | peak RSS in generation (MiB) | load (s) | "
        "checkpoint (MiB) | tensors (MiB) | embedding bytes per row, stored / running |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = rows["original"]
    for name, row in rows.items():
        ratio = row["ratios"]
        lookup_and_head = row.get("lookup_and_head_1x512_s")
        if "stored_bytes_per_row" in row:
            row_bytes = f"{row['stored_bytes_per_row']:.0f} / {row['runtime_bytes_per_row']:.0f}"
        else:
            row_bytes = "-" if name != "original" else "(the V x d matrix)"
        lines.append(
            f"| {_label(name)} | {row['prefill_1x512_s']:.3f} ({ratio['prefill_1x512_s']:.2f}x) | "
            f"{row['prefill_8x128_s']:.3f} ({ratio['prefill_8x128_s']:.2f}x) | "
            f"{row['forward_all_logits_1x512_s']:.3f} ({ratio['forward_all_logits_1x512_s']:.2f}x) | "
            f"{row['decode_tokens_per_s']:.1f} ({ratio['decode_tokens_per_s']:.2f}x) | "
            + ("-" if lookup_and_head is None else f"{1000 * lookup_and_head:.2f}")
            + f" | {row['rss_after_load'] / 2**20:.0f} | {row['peak_rss_generation'] / 2**20:.0f} | "
            f"{row['load_s']:.2f} | {row['checkpoint_bytes'] / 2**20:.1f} | {row['tensor_bytes'] / 2**20:.1f} | "
            f"{row_bytes} |"
        )
    lines += [
        "",
        "- *prefill*: one forward pass over the prompt as `generate` runs it (`logits_to_keep=1`: only the last "
        "position reaches the head), so the cheaper head barely shows; *full logits*: the same pass returning "
        "logits for every position (scoring, training), where the code-space head saves `V x (d - k)` "
        "multiply-adds per token.",
        "- *RSS after load*: weights are memory-mapped from the safetensors file, so pages not touched yet are not "
        "resident; the peak during generation (high-water mark reset after loading) is the comparable figure.",
        "- *tensors*: every stored tensor once (non-embedding weights + codes + decoder); *checkpoint*: bytes on "
        "disk (safetensors header included); *embedding bytes per row*: what the compressed embedding stores per "
        "token, and what it holds while the model runs (transform coding adds its runtime layout).",
        *(
            [
                '- *transform coding*: packed codes and an int8 decoder (`preset("transform_coding")`). Its tied head '
                "runs from the runtime layout: the codes' grid positions as int8 / int4 matrices multiplied by "
                "PyTorch's weight-only kernels with bf16 activations; no float `V x d` matrix is ever built "
                "([how it works](../how-it-works.md)).",
            ]
            if any(name.startswith("transform-coding") for name in rows)
            else []
        ),
        "",
        "Checks (from the rows above; embedding bytes saved = tensor bytes of the original minus those of the "
        "compressed model):",
        "",
    ]
    share = RSS_SAVING_SHARE[architecture]
    for name, row in rows.items():
        if name in ("original", CONTROL):
            continue
        saved = base["tensor_bytes"] - row["tensor_bytes"]
        rss_saved = base["peak_rss_generation"] - row["peak_rss_generation"]
        line = (
            f"- {name}: checkpoint / tensor bytes = {row['checkpoint_bytes'] / row['tensor_bytes']:.4f}; "
            f"peak RSS in generation {row['peak_rss_generation'] / 2**20:.0f} MiB, {rss_saved / 2**20:.0f} MiB below "
            f"the original = {100 * rss_saved / saved:.0f} % of the {saved / 2**20:.0f} MiB saved (bar "
            f"{100 * share:.0f} %): {'OK' if rss_saved >= share * saved else 'BELOW'}"
        )
        if name.startswith("transform-coding"):
            decode = row["ratios"]["decode_tokens_per_s"]
            faster = row["lookup_and_head_1x512_s"] < base["lookup_and_head_1x512_s"]
            line += (
                f"; decode {decode:.2f}x (bar {DECODE_SPEEDUP:.2f}x): "
                f"{'OK' if decode >= DECODE_SPEEDUP else 'BELOW'}; lookup + head "
                f"{1000 * row['lookup_and_head_1x512_s']:.2f} ms vs {1000 * base['lookup_and_head_1x512_s']:.2f}: "
                f"{'faster' if faster else 'NOT faster'}"
            )
        lines.append(line)
    lines += ["", *prefill_section(rows)]
    return "\n".join(lines)


def _label(name: str) -> str:
    return f"{name} (control)" if name == CONTROL else name


def prefill_section(rows: dict) -> list[str]:
    """Confidence intervals of the timing ratios, and what a generate-style prefill does differently."""
    if not all("ratio_intervals" in row for row in rows.values()):  # runs before the intervals (and lookup + head)
        return []
    keys = ("prefill_1x512_s", "prefill_8x128_s", "forward_all_logits_1x512_s", "decode_tokens_per_s")
    lines = [
        "## How precise the timing ratios are",
        "",
        "Median paired ratio (compressed / original) with its 95 % confidence interval (distribution-free: order "
        "statistics of the paired ratios). The control row times the original against itself.",
        "",
        "| model | prefill 1x512 | prefill 8x128 | full logits 1x512 | decode tok/s |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if name == "original":
            continue
        cells = []
        for key in keys:
            low, high = row["ratio_intervals"][key]
            cells.append(f"{row['ratios'][key]:.3f} [{low:.3f}, {high:.3f}]")
        lines.append(f"| {_label(name)} | {' | '.join(cells)} |")
    original = rows["original"]
    linear = [name for name in rows if name not in ("original", CONTROL)]
    saved = [original["lookup_and_head_1x512_s"] - rows[name]["lookup_and_head_1x512_s"] for name in linear]
    share = [seconds / original["prefill_1x512_s"] for seconds in saved]
    control = rows.get(CONTROL, {}).get("ratio_intervals", {})
    lines += [
        "",
        "A generate-style prefill runs the original's layers unchanged; the compressed models differ only in the "
        "lookup of the prompt and in the head at its last position (column *lookup + head*, the fastest of "
        f"{LOOKUP_AND_HEAD_CALLS} calls per repetition). The original's head reads the whole `V x d` matrix for that "
        f"one position: {1000 * original['lookup_and_head_1x512_s']:.2f} ms, against "
        f"{1000 * min(rows[name]['lookup_and_head_1x512_s'] for name in linear):.2f}-"
        f"{1000 * max(rows[name]['lookup_and_head_1x512_s'] for name in linear):.2f} ms for the compressed models, "
        f"which saves {1000 * min(saved):.1f}-{1000 * max(saved):.1f} ms per prefill, "
        f"{100 * min(share):.1f}-{100 * max(share):.1f} % of the original's 1x512 prefill.",
    ]
    if control:
        low, high = control["prefill_1x512_s"]
        lines[-1] += (
            f" The control's interval for the same timing, [{low:.3f}, {high:.3f}], is how far this machine's noise "
            "moves a ratio in this run."
        )
    return lines + [""]


def render_cuda(meta: dict, rows: dict) -> str:
    """The table of a run on a CUDA device: times in ms, memory from the CUDA allocator."""
    random_weights = meta.get("weights", "real") != "real"
    lines = [
        "# Inference on a GPU: SmolLM2-135M-Instruct"
        + (" architecture (random weights)" if random_weights else "")
        + ", original vs compressed embedding",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, transformers {meta.get('transformers', '?')}  ",
        f"Device `{meta['device']}`, models loaded in **{meta['dtype']}**. Medians of {meta['repeats']} interleaved "
        f"repetitions (each forward timing is itself the {_inner(meta)} of {meta.get('inner_repeats', 1)} calls); "
        "ratios are compressed / original in the same run. Timings synchronise the device before and after each call. "
        f"The autoencoder is trained for {meta['ae_epochs']} epoch(s): speed and memory do not depend on training.",
        "",
    ]
    if random_weights:
        lines += [
            "**Random weights**: the original is SmolLM2-135M-Instruct's architecture (its `config.json`: 30 layers, "
            "d = 576, V = 49,152, tied head) with random weights (seed 0), not the real checkpoint, which could not "
            "be carried to the GPU machine; the compressed models compress those random weights. Speed and memory "
            "depend only on the shapes and dtypes, not on the values; the generated text is meaningless.",
            "",
        ]
    lines += [
        "| model | prefill 1x512 (ms) | prefill 8x128 (ms) | full logits 1x512 (ms) | full logits 8x128 (ms) | "
        "decode tok/s | GPU memory after load (MiB) | peak GPU memory in generation (MiB) | load (s) | "
        "checkpoint (MiB) | tensors (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ratio = row["ratios"]

        def ms(key, row=row, ratio=ratio):
            return f"{1000 * row[key]:.2f} ({ratio[key]:.2f}x)"

        lines.append(
            f"| {_label(name)} | {ms('prefill_1x512_s')} | {ms('prefill_8x128_s')} | "
            f"{ms('forward_all_logits_1x512_s')} | {ms('forward_all_logits_8x128_s')} | "
            f"{row['decode_tokens_per_s']:.1f} ({ratio['decode_tokens_per_s']:.2f}x) | "
            f"{row['cuda_allocated_after_load'] / 2**20:.0f} | {row['cuda_peak_generation'] / 2**20:.0f} | "
            f"{row['load_s']:.2f} | {row['checkpoint_bytes'] / 2**20:.1f} | {row['tensor_bytes'] / 2**20:.1f} |"
        )
    lines += [
        "",
        "- *prefill*: one forward pass over the prompt as `generate` runs it (`logits_to_keep=1`: only the last "
        "position reaches the head); *full logits*: the same pass returning logits for every position (scoring, "
        "training), where the code-space head saves `V x (d - k)` multiply-adds per token.",
        "- *decode tok/s*: greedy `generate`, 128 new tokens after a 32-token prompt, batch 1 (on a GPU this is "
        "mostly bound by kernel launches, not by arithmetic).",
        "- *GPU memory*: `torch.cuda.memory_allocated` after loading (weights) and `max_memory_allocated` during "
        "generation (weights + KV cache + activations), in a fresh process per model; *load*: `from_pretrained` "
        "and the copy to the device, CUDA context created before the clock starts.",
        "- *tensors*: every stored tensor once (non-embedding weights + codes + decoder); *checkpoint*: bytes on "
        "disk (safetensors header included); both fp32 on disk whatever the dtype the models run in.",
        "",
        "Fastest of the repetitions (ms; decode: best tok/s), to separate the models from run-to-run noise:",
        "",
        "| model | prefill 1x512 | prefill 8x128 | full logits 1x512 | full logits 8x128 | decode tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        samples = row["samples"]
        best = [f"{1000 * min(samples[key]):.2f}" for key in FORWARD_KEYS]
        lines.append(f"| {_label(name)} | {' | '.join(best)} | {max(samples['decode_tokens_per_s']):.1f} |")
    fastest = [1000 * min(row["samples"][key]) for row in rows.values() for key in FORWARD_KEYS]
    if max(fastest) <= 1.15 * min(fastest):
        lines += [
            "",
            f"Every forward pass of every model, whatever its shape, takes about the same time at best "
            f"({min(fastest):.1f} to {max(fastest):.1f} ms): at this model size the GPU run is bound by the fixed "
            "cost of launching eager PyTorch's kernels (30 layers), not by arithmetic or memory traffic, so the "
            "cheaper head cannot show, and the medians above differ by run-to-run noise rather than by model.",
        ]
    lines += [
        "",
        "Checks (from the rows above; bytes saved = tensor bytes of the original minus those of the compressed "
        f"model, converted from fp32 on disk to {meta['dtype']} on the device):",
        "",
    ]
    base = rows["original"]
    scale = DTYPES[meta["dtype"]].itemsize / 4
    for name, row in rows.items():
        if name in ("original", CONTROL):
            continue
        saved = (base["tensor_bytes"] - row["tensor_bytes"]) * scale
        limit = base["cuda_peak_generation"] - 0.8 * saved
        lines.append(
            f"- {name}: checkpoint / tensor bytes = {row['checkpoint_bytes'] / row['tensor_bytes']:.4f}; "
            f"peak GPU memory in generation {row['cuda_peak_generation'] / 2**20:.0f} MiB vs limit (original - 80% "
            f"of {saved / 2**20:.0f} MiB saved) {limit / 2**20:.0f} MiB: "
            f"{'OK' if row['cuda_peak_generation'] <= limit else 'ABOVE'}"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
