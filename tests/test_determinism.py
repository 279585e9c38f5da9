"""Determinism: on CPU, the same seed gives bitwise-equal codes, decoders and checkpoint files, end to end through
`compress_model` + `save_pretrained`, whatever the global random state. (test_methods.py checks the autoencoder alone
through `compress_embedding`.)
"""

import hashlib

import pytest
import torch
from conftest import tiny_model

from compressed_embeddings import CompressedEmbeddingConfig, compress_model

METHODS = {
    "autoencoder": dict(method="autoencoder", compression_ratio=5, epochs=3),
    "autoencoder-svd-init": dict(method="autoencoder", code_dim=6, epochs=2, init="svd"),
    "svd-randomized": dict(method="svd", code_dim=6, svd_solver="randomized"),
    "svd-exact": dict(method="svd", code_dim=6, svd_solver="exact"),
}


def _compress_and_save(family, fields, folder, global_seed):
    torch.manual_seed(global_seed)  # the global RNG must not matter: only config.seed does
    model = compress_model(tiny_model(family), CompressedEmbeddingConfig(**fields), show_progress=False)
    model.save_pretrained(folder)
    state = {k: v.clone() for k, v in model.get_input_embeddings().state_dict().items()}
    return state, hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("family", ["llama", "bert"])
@pytest.mark.parametrize("name", list(METHODS))
def test_same_seed_same_bits(name, family, tmp_path):
    first, first_hash = _compress_and_save(family, METHODS[name], tmp_path / "a", global_seed=0)
    second, second_hash = _compress_and_save(family, METHODS[name], tmp_path / "b", global_seed=12345)
    assert first.keys() == second.keys() and "codes" in first
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert first_hash == second_hash, "the saved weights are byte-identical"


@pytest.mark.parametrize("name", ["autoencoder", "svd-randomized"])
def test_another_seed_other_codes(name, tmp_path):
    """The seed is what decides: changing it changes the codes (so the test above is not vacuous)."""
    first, _ = _compress_and_save("llama", METHODS[name], tmp_path / "a", global_seed=0)
    second, _ = _compress_and_save("llama", {**METHODS[name], "seed": 7}, tmp_path / "b", global_seed=0)
    assert not torch.equal(first["codes"], second["codes"])
