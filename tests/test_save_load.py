"""Compress tiny models of every family, save them, and reload them in fresh processes by both paths."""

import json

import pytest
import torch
from conftest import REPO, TINY_FAMILIES, load_in_fresh_process, tiny_model
from safetensors.torch import save_file

from compressed_embeddings import CompressedEmbeddingConfig, compress_model
from compressed_embeddings.version import FORMAT_VERSION

SAVED_AUTO_CLASS = {
    "BertForMaskedLM": "AutoModelForMaskedLM",
    "RobertaForMaskedLM": "AutoModelForMaskedLM",
    "DistilBertForMaskedLM": "AutoModelForMaskedLM",
}


@pytest.fixture(scope="module")
def saved_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 99, (2, 9), generator=generator)
    manifest = []
    # Every family as it comes (SVD), and untied with both matrices compressed (transform coding, data-free).
    variants = [(family, False) for family in TINY_FAMILIES] + [(family, True) for family in TINY_FAMILIES]
    for family, untied in variants:
        _, _, class_name, auto_classes = TINY_FAMILIES[family]
        if untied:
            model = tiny_model(family, tie_word_embeddings=False)
            config = CompressedEmbeddingConfig(compression_ratio=4, kl_steps=2)
        else:
            model, config = tiny_model(family), CompressedEmbeddingConfig(method="svd", code_dim=8)
        model = compress_model(model, config, show_progress=False, calibration=None)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            hidden = model.base_model(input_ids=ids).last_hidden_state
        name = f"{family}-untied" if untied else family
        path = root / f"ckpt_{name}"
        model.save_pretrained(path)
        save_file({"input_ids": ids, "logits": logits, "hidden": hidden}, str(root / f"ref_{name}.safetensors"))
        head = model.get_output_embeddings()
        manifest.append(
            {
                "family": family,
                "name": name,
                "path": str(path),
                "reference": str(root / f"ref_{name}.safetensors"),
                "auto_classes": auto_classes,
                "saved_auto_class": SAVED_AUTO_CLASS.get(class_name, "AutoModelForCausalLM"),
                "tied": type(head).__name__ == "CompressedOutputHead" and head.tied,
                "own_head": type(head).__name__ == "CompressedOutputHead" and not head.tied,
            }
        )
    manifest_path = root / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    return manifest_path, manifest


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_reload_in_fresh_process(saved_checkpoints, mode):
    manifest_path, manifest = saved_checkpoints
    results = load_in_fresh_process(manifest_path, mode)
    assert results[-1] == {"package_imported": mode == "import"}
    by_name = {entry["name"]: entry for entry in manifest}
    seen = set()
    for row in results[:-1]:
        entry = by_name[row["name"]]
        seen.add((row["name"], row["auto_class"]))
        assert row["class"].startswith("Compressed"), row
        assert row["embedding"] == "CompressedEmbedding", row
        if mode == "remote":
            assert row["module"].startswith("transformers_modules."), row
        else:
            assert row["module"] == "compressed_embeddings.modeling", row
        # The embedding is never re-initialised: its keys are never missing, whatever the head. (Stock
        # transformers cannot load a causal-LM checkpoint into Llama-style *ForQuestionAnswering, whose base
        # model is called `transformer`, not `model`: the same happens to stock checkpoints, so we allow it.)
        for key in [k for k in row["missing"] if "codes" in k or "decoder" in k]:
            prefix = row["base_model_prefix"]
            assert key.startswith(f"{prefix}.") and "model." + key[len(prefix) + 1 :] in row["unexpected"], row
        if row["auto_class"] == entry["saved_auto_class"]:
            assert row["missing"] == [] and row["unexpected"] == [], row
            assert row["equal"] or row["max_abs_diff"] < 1e-6, row
            if entry["tied"]:
                assert row["head"] == "CompressedOutputHead" and row["head_shares_embedding"], row
            elif entry["own_head"]:  # untied, compressed with codes of its own
                assert row["head"] == "CompressedOutputHead" and row["head_own_layer"] == "CompressedEmbedding", row
            else:
                assert row["head"] == "Linear", row
        if row["auto_class"] == "AutoModel":  # a masked-LM checkpoint has no pooler, as with stock BERT
            assert all(key.startswith("pooler.") for key in row["missing"]), row
            assert row["equal"] or row["max_abs_diff"] < 1e-6, row
    expected = {(entry["name"], auto) for entry in manifest for auto in TINY_FAMILIES[entry["family"]][3]}
    assert seen == expected
    assert {entry["family"] for entry in manifest if entry["own_head"]} == set(TINY_FAMILIES)  # every family, untied


def test_checkpoint_contents(saved_checkpoints):
    _, manifest = saved_checkpoints
    for entry in manifest:
        folder = entry["path"]
        config = json.load(open(f"{folder}/config.json"))
        assert config["model_type"] == f"compressed_{entry['family']}"
        block = config["compressed_embedding"]
        # format 3 only where it is needed (an untied head's own codes): older releases read the others
        assert block["library_version"] and block["format_version"] == (FORMAT_VERSION if entry["own_head"] else 2)
        assert (block["output_head"] is not None) == entry["own_head"] and FORMAT_VERSION == 3
        auto_map = config["auto_map"]
        assert auto_map["AutoConfig"].startswith("configuration.Compressed")
        for auto in TINY_FAMILIES[entry["family"]][3]:
            assert auto_map[auto].startswith("modeling.Compressed"), (entry["family"], auto)
        for name in ("configuration.py", "layer.py", "modeling.py", "version.py", "model.safetensors"):
            assert (REPO / folder / name).exists() or __import__("os").path.exists(f"{folder}/{name}")
        assert not __import__("glob").glob(f"{folder}/*.bin")


def test_remote_code_imports_only_torch_and_transformers():
    """The files copied into checkpoints import nothing beyond the standard library, torch and transformers."""
    import ast

    from compressed_embeddings.modeling import CODE_FILES

    allowed_roots = {"torch", "transformers", "safetensors", "contextlib", "json", "math", "shutil", "pathlib"}
    allowed_roots |= {"dataclasses", "typing", "hashlib"}
    total = 0
    for name in CODE_FILES:
        source = (REPO / "compressed_embeddings" / name).read_text()
        total += len(source.splitlines())
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 1, f"{name}: only single-dot relative imports travel with checkpoints"
                continue
            else:
                continue
            assert roots <= allowed_roots, f"{name} imports {roots - allowed_roots}"
    # 2,140 lines after issue 18; untied output heads with codes of their own added 62, the checks of stored
    # values and their checksums (issue 21) about 100
    assert total < 2400, f"remote code should stay small enough to audit ({total} lines)"


def test_a_transform_coded_checkpoint_loads_into_a_classifier_whose_backbone_is_built_by_auto(tmp_path):
    """Llama's sequence classifier builds its backbone through `AutoModel`, which installs the compressed embedding
    first; installing it again must not decode the (meta) packed codes."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = CompressedEmbeddingConfig(compression_ratio=4, kl_steps=2)
    compress_model(
        tiny_model("llama", vocab_size=1024), config, calibration=None, show_progress=False
    ).save_pretrained(tmp_path)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3).eval()
    lm = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert classifier(ids).logits.shape == (1, 3)
        torch.testing.assert_close(classifier.model.embed_tokens(ids), lm.model.embed_tokens(ids))
