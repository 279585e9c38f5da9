"""What the stock example scripts do, through the same public APIs, on compressed checkpoints.

Usage (run as a subprocess by tests/test_trainer_flows.py and tests/test_hook.py):

    python tests/trainer_flows.py train  MODE SRC_BERT SRC_GPT2 OUT [TASK ...]
    python tests/trainer_flows.py reload MODE OUT [OUT ...]

MODE says how the compressed classes are found, as a user of the scripts would run them:
`remote`: `--trust_remote_code True` (the scripts pass `trust_remote_code=` to AutoConfig, AutoTokenizer and
AutoModel*), the package is never imported; `import`: `import compressed_embeddings`, no flag; `plain`: neither
(works only with the auto-registration hook installed).

`train` reproduces, for each TASK (default: all three), the steps of
- `text-classification/run_glue.py` with `--train_file train.csv --validation_file val.csv` (`glue`),
- `question-answering/run_qa.py` (`qa`: features with offsets and stride, start/end positions),
- `language-modeling/run_clm.py` (`clm`: resize to the tokenizer, tokenize, group into blocks),
with the stock `Trainer` for a few steps, then `trainer.save_model()` and `trainer.predict` on the evaluation set.
`reload` loads every output folder like a fresh script would and predicts the same evaluation set again.
Both print `RESULTS=<json>` on the last line.
"""

import csv
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, load_dataset, load_from_disk
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

AUTO = {
    "glue": AutoModelForSequenceClassification,
    "qa": AutoModelForQuestionAnswering,
    "clm": AutoModelForCausalLM,
}
SOURCE = {"glue": "bert", "qa": "bert", "clm": "gpt2"}


def training_args(output_dir: Path) -> TrainingArguments:
    # The flags of the command lines in examples/README.md: --use_cpu --report_to none --max_steps 4 ...
    return TrainingArguments(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        max_steps=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        seed=42,
        disable_tqdm=True,
    )


def _words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randint(10, 60)}" for _ in range(n)]


# ------------------------------------------------------------------------------------------------ run_glue.py
def glue(source: str, out: Path, kwargs: dict) -> tuple[Trainer, Dataset]:
    rng = random.Random(0)
    data_dir = out.parent / "glue_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 16), ("val", 8)):
        with open(data_dir / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            for _ in range(n):
                words = _words(rng, rng.randint(3, 9))
                writer.writerow([" ".join(words), int("w10" < min(words) < "w30")])
    files = {"train": str(data_dir / "train.csv"), "validation": str(data_dir / "val.csv")}
    raw_datasets = load_dataset("csv", data_files=files)
    label_list = raw_datasets["train"].unique("label")
    label_list.sort()
    num_labels = len(label_list)

    config = AutoConfig.from_pretrained(source, num_labels=num_labels, finetuning_task="rotten_tomatoes", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(source, config=config, **kwargs)

    label_to_id = {v: i for i, v in enumerate(label_list)}
    model.config.label2id = label_to_id
    model.config.id2label = {id: label for label, id in config.label2id.items()}
    max_seq_length = min(128, tokenizer.model_max_length)

    def preprocess_function(examples):
        result = tokenizer(examples["sentence"], padding=False, max_length=max_seq_length, truncation=True)
        result["label"] = [(label_to_id[label] if label != -1 else -1) for label in examples["label"]]
        return result

    raw_datasets = raw_datasets.map(preprocess_function, batched=True)

    def compute_metrics(p):
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        return {"accuracy": float((np.argmax(preds, axis=1) == p.label_ids).astype(np.float32).mean())}

    trainer = Trainer(
        model=model,
        args=training_args(out),
        train_dataset=raw_datasets["train"],
        eval_dataset=raw_datasets["validation"],
        compute_metrics=compute_metrics,
        processing_class=tokenizer,
        data_collator=None,  # DataCollatorWithPadding, as run_glue.py without --pad_to_max_length
    )
    return trainer, raw_datasets["validation"]


# ------------------------------------------------------------------------------------------------ run_qa.py
def qa(source: str, out: Path, kwargs: dict) -> tuple[Trainer, Dataset]:
    rng = random.Random(1)
    rows = []
    for i in range(12):
        context_words = _words(rng, 14)
        start = rng.randint(0, 11)
        answer = " ".join(context_words[start : start + 2])
        context = " ".join(context_words)
        rows.append(
            {
                "id": str(i),
                "question": f"  w5 w6 {context_words[start]}",
                "context": context,
                "answers": {"text": [answer], "answer_start": [context.index(answer)]},
            }
        )
    raw = Dataset.from_list(rows)

    config = AutoConfig.from_pretrained(source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, **kwargs)
    model = AutoModelForQuestionAnswering.from_pretrained(source, config=config, **kwargs)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError("run_qa.py needs a fast tokenizer (offset mappings)")
    pad_on_right = tokenizer.padding_side == "right"
    max_seq_length, doc_stride = 16, 4  # --max_seq_length 16 --doc_stride 4: long contexts overflow

    def prepare_train_features(examples):
        examples["question"] = [q.lstrip() for q in examples["question"]]
        tokenized = tokenizer(
            examples["question" if pad_on_right else "context"],
            examples["context" if pad_on_right else "question"],
            truncation="only_second" if pad_on_right else "only_first",
            max_length=max_seq_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        offset_mapping = tokenized.pop("offset_mapping")
        tokenized["start_positions"], tokenized["end_positions"] = [], []
        for i, offsets in enumerate(offset_mapping):
            input_ids = tokenized["input_ids"][i]
            cls_index = input_ids.index(tokenizer.cls_token_id)
            sequence_ids = tokenized.sequence_ids(i)
            answers = examples["answers"][sample_mapping[i]]
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start_index = 0
            while sequence_ids[token_start_index] != (1 if pad_on_right else 0):
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != (1 if pad_on_right else 0):
                token_end_index -= 1
            if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
                tokenized["start_positions"].append(cls_index)
                tokenized["end_positions"].append(cls_index)
            else:
                while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                    token_start_index += 1
                tokenized["start_positions"].append(token_start_index - 1)
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                tokenized["end_positions"].append(token_end_index + 1)
        return tokenized

    features = raw.map(prepare_train_features, batched=True, remove_columns=raw.column_names)
    answerable = sum(s != 0 for s in features["start_positions"])
    if not 0 < answerable < len(features):
        raise AssertionError(f"expected answerable and unanswerable features, got {answerable}/{len(features)}")
    trainer = Trainer(
        model=model,
        args=training_args(out),
        train_dataset=features,
        eval_dataset=features,
        processing_class=tokenizer,
        data_collator=default_data_collator,  # run_qa.py pads to max_seq_length
    )
    return trainer, features


# ------------------------------------------------------------------------------------------------ run_clm.py
def clm(source: str, out: Path, kwargs: dict) -> tuple[Trainer, Dataset]:
    rng = random.Random(2)
    raw = Dataset.from_dict({"text": [" ".join(_words(rng, rng.randint(8, 20))) for _ in range(12)]})

    config = AutoConfig.from_pretrained(source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32, **kwargs)
    # We resize the embeddings only when necessary to avoid index errors (run_clm.py).
    embedding_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embedding_size:
        model.resize_token_embeddings(len(tokenizer))

    tokenized = raw.map(lambda examples: tokenizer(examples["text"]), batched=True, remove_columns=["text"])
    block_size = 16  # --block_size 16

    def group_texts(examples):
        concatenated = {k: sum(examples[k], []) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]]) // block_size * block_size
        result = {
            k: [t[i : i + block_size] for i in range(0, total_length, block_size)] for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    lm_datasets = tokenized.map(group_texts, batched=True)

    def preprocess_logits_for_metrics(logits, labels):
        return logits[0].argmax(dim=-1) if isinstance(logits, tuple) else logits.argmax(dim=-1)

    trainer = Trainer(
        model=model,
        args=training_args(out),
        train_dataset=lm_datasets,
        eval_dataset=lm_datasets,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
    )
    return trainer, lm_datasets


TASKS = {"glue": glue, "qa": qa, "clm": clm}


def _predictions(output) -> list[np.ndarray]:
    predictions = output.predictions
    return list(predictions) if isinstance(predictions, tuple) else [predictions]


def _mode_kwargs(mode: str) -> dict:
    if mode == "import":
        import compressed_embeddings  # noqa: F401
    elif mode not in ("remote", "plain"):
        raise SystemExit(f"unknown mode {mode!r}")
    return {"trust_remote_code": True} if mode == "remote" else {}


def train(mode: str, src_bert: str, src_gpt2: str, out_root: str, *tasks: str) -> None:
    kwargs = _mode_kwargs(mode)
    sources = {"bert": src_bert, "gpt2": src_gpt2}
    results = {}
    for task in tasks or TASKS:
        out = Path(out_root) / task
        trainer, eval_dataset = TASKS[task](sources[SOURCE[task]], out, kwargs)
        layer = trainer.model.get_input_embeddings()
        codes, decoder = layer.codes.detach().clone(), layer.decoder.weight.detach().clone()
        train_result = trainer.train()
        trainer.save_model()  # the output folder run_*.py leave behind (+ the tokenizer)
        trainer.preprocess_logits_for_metrics = None  # compare full logits (run_clm.py keeps only the argmax)
        prediction = trainer.predict(eval_dataset)
        eval_dataset.save_to_disk(str(out / "eval_dataset"))
        np.savez(out / "predictions.npz", *_predictions(prediction))
        results[task] = {
            "class": type(trainer.model).__name__,
            "module": type(trainer.model).__module__,
            "steps": train_result.global_step,
            "train_loss": train_result.training_loss,
            "codes_changed": not torch.equal(codes, layer.codes.detach()),
            "codes_trainable": layer.codes.requires_grad,
            "decoder_changed": not torch.equal(decoder, layer.decoder.weight.detach()),
            "vocab_size": trainer.model.config.get_text_config().vocab_size,
        }
    results["package_imported"] = "compressed_embeddings" in sys.modules
    print("\nRESULTS=" + json.dumps(results))


def reload(mode: str, *out_roots: str) -> None:
    kwargs = _mode_kwargs(mode)
    results = {}
    outs = [p for root in out_roots for p in sorted(Path(root).iterdir()) if (p / "predictions.npz").exists()]
    for out in outs:
        task, out_root = out.name, out.parent
        model, info = AUTO[task].from_pretrained(out, output_loading_info=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(out, **kwargs)
        args = training_args(out_root / f"reload-{mode}" / task)
        collator = None if task == "glue" else default_data_collator
        trainer = Trainer(model=model, args=args, processing_class=tokenizer, data_collator=collator)
        predictions = _predictions(trainer.predict(load_from_disk(str(out / "eval_dataset"))))
        saved = np.load(out / "predictions.npz")
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        same_shapes = [p.shape for p in predictions] == [e.shape for e in expected]
        diffs = [float(np.abs(p - e).max()) for p, e in zip(predictions, expected)] if same_shapes else None
        layer = model.get_input_embeddings()
        results[f"{out_root.name}/{task}"] = {
            "class": type(model).__name__,
            "module": type(model).__module__,
            "missing": sorted(info["missing_keys"]),
            "unexpected": sorted(info["unexpected_keys"]),
            "max_abs_diff": max(diffs) if diffs else None,
            "finite": all(bool(np.isfinite(p).all()) for p in predictions),
            "codes_trainable": layer.codes.requires_grad,
            "num_labels": model.config.num_labels,
            "id2label": {str(k): v for k, v in model.config.id2label.items()},
            "vocab_size": model.config.get_text_config().vocab_size,
            "num_embeddings": layer.num_embeddings,
        }
    results["package_imported"] = "compressed_embeddings" in sys.modules
    print("\nRESULTS=" + json.dumps(results, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))


if __name__ == "__main__":
    {"train": train, "reload": reload}[sys.argv[1]](*sys.argv[2:])
