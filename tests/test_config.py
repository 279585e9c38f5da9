"""`CompressedEmbeddingConfig`: defaults, sizes, validation, (de)serialisation, presets, per-family config classes."""

import dataclasses
import json
import logging
import math

import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, BertConfig, LlamaConfig, PreTrainedConfig

from compressed_embeddings import (
    CompressedEmbedding,
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    compressed_config_class,
    configuration,
)
from compressed_embeddings.methods import registered_methods
from compressed_embeddings.version import FORMAT_VERSION, __version__

LAYER_FIELDS = {f.name: f for f in dataclasses.fields(CompressedEmbeddingConfig)}
# Every name a config accepts: its own fields and the built-in methods' settings (nested under `method_config`).
FIELDS = {
    **{f.name: f for entry in registered_methods().values() for f in dataclasses.fields(entry.config_class)},
    **{name: f for name, f in LAYER_FIELDS.items() if name != "method_config"},
}
BERT_V, BERT_D = 30522, 768


def AE(**fields) -> CompressedEmbeddingConfig:  # noqa: N802 - reads as the config it builds
    """A config of the paper's autoencoder unless `fields` name another method (the default is transform coding)."""
    return CompressedEmbeddingConfig(**{"method": "autoencoder", **fields})


# ---------------------------------------------------------------------------------------------- defaults
def test_defaults_are_transform_coding_and_the_paper_recipe_is_one_flag_away():
    default = CompressedEmbeddingConfig()
    assert default.method == "transform_coding" and default.compression_ratio == 10 and default.code_dim is None
    assert default.kl_steps is None and default.decoder_dtype is None  # the method's, fixed when resolved
    config = AE(method="autoencoder")
    assert config == CompressedEmbeddingConfig.preset("paper")
    assert config.code_dim is None and config.compression_ratio == 10
    assert config.cosine_weight == pytest.approx(0.9975 / 5) == 0.1995
    assert config.l1_weight == 0.0025 and config.rmse_weight == 0.0
    assert (config.l1_power_start, config.l1_power_end, config.l1_power_decay_epochs) == (1.0, 0.1, 20)
    assert config.learning_rate == 1e-3
    assert (config.lr_step_epochs, config.lr_gamma) == (4, 0.5)
    assert (config.batch_size, config.epochs, config.seed) == (32, 30, 1)
    assert config.max_steps is None
    assert config.decoder_hidden_dims == [] and config.use_decoder_bias is True
    assert config.freeze_codes is True and config.compress_output_head is True
    assert config.format_version == FORMAT_VERSION and config.library_version == __version__
    assert not config.is_resolved


def test_ratio_default_only_when_no_size_is_given():
    assert AE(code_dim=8).compression_ratio is None
    assert AE(compression_ratio=4).compression_ratio == 4
    assert AE(method="svd").use_decoder_bias is False
    assert AE(method="svd", decoder_bias=True).use_decoder_bias is True
    assert AE(decoder_bias=False).use_decoder_bias is False


def test_default_lists_are_not_shared():
    a, b = CompressedEmbeddingConfig(), CompressedEmbeddingConfig()
    a.decoder_hidden_dims.append(3)
    assert b.decoder_hidden_dims == []
    assert AE(decoder_hidden_dims=(4, 5)).decoder_hidden_dims == [4, 5]


# ---------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("ratio, expected", [(2.5, 299), (5, 149), (10, 74)])
def test_code_dim_for_bert_base(ratio, expected):
    svd = AE(method="svd", compression_ratio=ratio)
    linear = AE(compression_ratio=ratio)
    assert svd.code_dim_for(BERT_V, BERT_D) == int(BERT_V * BERT_D / (ratio * (BERT_V + BERT_D))) == expected
    assert linear.code_dim_for(BERT_V, BERT_D) == math.floor((BERT_V * BERT_D / ratio - BERT_D) / (BERT_V + BERT_D))


def _ratio(config, vocab, hidden, k):
    return vocab * hidden / config.stored_parameters(vocab, hidden, k)


@settings(max_examples=200, deadline=None)
@given(
    vocab=st.integers(2, 200_000),
    hidden=st.integers(2, 4096),
    ratio=st.floats(1.01, 500, allow_nan=False),
    method=st.sampled_from(["autoencoder", "svd"]),
    hidden_dims=st.lists(st.integers(1, 256), max_size=2),
    bias=st.sampled_from([None, True, False]),
)
def test_code_dim_for_is_the_largest_k_reaching_the_ratio(vocab, hidden, ratio, method, hidden_dims, bias):
    config = AE(method=method, compression_ratio=ratio, decoder_hidden_dims=hidden_dims, decoder_bias=bias)
    try:
        k = config.code_dim_for(vocab, hidden)
    except CompressedEmbeddingConfigError as error:
        # Only when even k = 1 stores too much; the message says what is reachable.
        assert _ratio(config, vocab, hidden, 1) < ratio
        assert "compression_ratio" in str(error) and "highest ratio reachable" in str(error)
        assert f"{_ratio(config, vocab, hidden, 1):.2f}" in str(error)
        return
    assert 1 <= k < hidden
    assert _ratio(config, vocab, hidden, k) >= ratio
    assert k + 1 == hidden or _ratio(config, vocab, hidden, k + 1) < ratio
    # The closed forms, up to float rounding when the exact quotient is an integer (e.g. V = d = 121, R = 1.1).
    if not hidden_dims and config.use_decoder_bias:
        exact = (vocab * hidden / ratio - hidden) / (vocab + hidden)
        assert k == math.floor(exact) or abs(exact - round(exact)) < 1e-9
    if not hidden_dims and not config.use_decoder_bias:
        exact = vocab * hidden / (ratio * (vocab + hidden))
        assert k == int(exact) or abs(exact - round(exact)) < 1e-9


def test_mlp_decoder_parameters_are_counted():
    linear = AE(compression_ratio=10)
    mlp = AE(compression_ratio=10, decoder_hidden_dims=[256, 128])
    k_linear, k_mlp = linear.code_dim_for(BERT_V, BERT_D), mlp.code_dim_for(BERT_V, BERT_D)
    assert k_mlp < k_linear
    layer = CompressedEmbedding.from_config(mlp.resolved(num_embeddings=BERT_V, embedding_dim=BERT_D), device="meta")
    stored = sum(p.numel() for p in layer.parameters())
    assert stored == mlp.stored_parameters(BERT_V, BERT_D, k_mlp)
    assert mlp.decoder_parameters(k_mlp, BERT_D) == (k_mlp * 256 + 256) + (256 * 128 + 128) + (128 * BERT_D + BERT_D)
    assert BERT_V * BERT_D / stored >= 10
    assert BERT_V * BERT_D / mlp.stored_parameters(BERT_V, BERT_D, k_mlp + 1) < 10


def test_code_dim_wins_over_ratio_and_is_checked_against_hidden_size():
    config = AE(code_dim=12, compression_ratio=10)
    assert config.code_dim_for(BERT_V, BERT_D) == 12
    with pytest.raises(CompressedEmbeddingConfigError, match=r"code_dim.*got 32.*\[1, 32\)"):
        AE(code_dim=32).code_dim_for(99, 32)


def test_ratio_too_high_says_the_highest_reachable_ratio():
    config = AE(method="svd", compression_ratio=1000)
    best = 100 * 32 / (100 * 1 + 32)  # k = 1, decoder 1 x 32 without bias
    with pytest.raises(CompressedEmbeddingConfigError, match=r"compression_ratio") as info:
        config.code_dim_for(100, 32)
    assert "1000" in str(info.value) and "highest ratio reachable" in str(info.value)
    assert f"{best:.2f}" in str(info.value)


def test_resolved_fills_the_facts():
    config = AE(method="svd", compression_ratio=5)
    resolved = config.resolved(num_embeddings=BERT_V, embedding_dim=BERT_D, padding_idx=0)
    assert resolved.is_resolved and resolved.code_dim == 149 and resolved.padding_idx == 0
    assert config.code_dim is None and not config.is_resolved  # the original is untouched
    with pytest.raises(CompressedEmbeddingConfigError, match="code_dim"):
        AE(code_dim=40).resolved(num_embeddings=99, embedding_dim=32)
    with pytest.raises(CompressedEmbeddingConfigError, match="embedding_dim"):
        AE(code_dim=4).resolved(num_embeddings=99)


# ---------------------------------------------------------------------------------------------- validation
BAD_VALUES = [
    ("method", "pca"),
    ("method", None),
    ("method", "SVD"),
    ("code_dim", 0),
    ("code_dim", -1),
    ("code_dim", 8.0),
    ("code_dim", True),
    ("code_dim", "8"),
    ("compression_ratio", 1),
    ("compression_ratio", 0.5),
    ("compression_ratio", -3),
    ("compression_ratio", float("nan")),
    ("compression_ratio", float("inf")),
    ("compression_ratio", "10"),
    ("compression_ratio", True),
    ("decoder_hidden_dims", [0]),
    ("decoder_hidden_dims", [64, -1]),
    ("decoder_hidden_dims", [True]),
    ("decoder_hidden_dims", [2.0]),
    ("decoder_hidden_dims", 64),
    ("decoder_hidden_dims", "64"),
    ("decoder_activation", "sigmoid"),
    ("decoder_activation", "ELU"),
    ("decoder_bias", 1),
    ("decoder_bias", "yes"),
    ("cosine_weight", -0.1),
    ("l1_weight", -1),
    ("rmse_weight", float("nan")),
    ("rmse_weight", "0"),
    ("l1_power_start", -1.0),
    ("l1_power_end", float("inf")),
    ("l1_power_decay_epochs", -1),
    ("l1_power_decay_epochs", 2.5),
    ("epochs", 0),
    ("epochs", True),
    ("epochs", 3.0),
    ("max_steps", 0),
    ("max_steps", False),
    ("batch_size", 0),
    ("batch_size", -32),
    ("batch_size", None),
    ("learning_rate", 0),
    ("learning_rate", -1e-3),
    ("learning_rate", float("inf")),
    ("learning_rate", "1e-3"),
    ("lr_step_epochs", 0),
    ("lr_gamma", -0.5),
    ("lr_gamma", None),
    ("init", "xavier"),
    ("seed", -1),
    ("seed", True),
    ("seed", 1.5),
    ("svd_solver", "lapack"),
    ("svd_oversamples", -1),
    ("svd_power_iterations", -1),
    ("svd_power_iterations", False),
    ("freeze_codes", 1),
    ("freeze_codes", None),
    ("compress_output_head", "false"),
    ("tied_output_head", 0),
    ("zero_padding_row", None),
    ("num_embeddings", 0),
    ("num_embeddings", True),
    ("embedding_dim", -768),
    ("padding_idx", 1.0),
    ("padding_idx", True),
    ("embed_scale", 0),
    ("embed_scale", float("nan")),
    ("embed_scale", True),
    ("format_version", 0),
    ("format_version", "1"),
    ("format_version", True),
    ("library_version", 1),
    ("tensor_sha256", "abc"),
    ("tensor_sha256", {"model.embed_tokens.codes": "0" * 63}),
    ("tensor_sha256", {"model.embed_tokens.codes": "A" * 64}),
]


@pytest.mark.parametrize("name, value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_every_bad_value_is_rejected_naming_field_and_value(name, value):
    assert name in FIELDS
    with pytest.raises(CompressedEmbeddingConfigError) as info:
        AE(**{name: value})
    message = str(info.value)
    assert f"CompressedEmbeddingConfig.{name} is invalid" in message
    assert f"got {value!r}" in message
    # The same through from_dict (how a config.json is read).
    with pytest.raises(CompressedEmbeddingConfigError, match=f"CompressedEmbeddingConfig.{name} is invalid"):
        CompressedEmbeddingConfig.from_dict({name: value})


def test_cross_field_validation():
    with pytest.raises(CompressedEmbeddingConfigError, match=r"code_dim is invalid: got 32; .*\[1, 32\)"):
        AE(code_dim=32, embedding_dim=32)
    with pytest.raises(CompressedEmbeddingConfigError, match=r"padding_idx is invalid: got 99"):
        AE(num_embeddings=99, padding_idx=99)
    with pytest.raises(CompressedEmbeddingConfigError, match=r"padding_idx is invalid: got -100"):
        AE(num_embeddings=99, padding_idx=-100)
    assert AE(num_embeddings=99, padding_idx=-1).padding_idx == -1
    with pytest.raises(CompressedEmbeddingConfigError, match=r"cosine_weight is invalid"):
        AE(cosine_weight=0, l1_weight=0, rmse_weight=0)
    # SVD does not use the loss weights.
    assert AE(method="svd", cosine_weight=0, l1_weight=0).method == "svd"


def test_good_edge_values_are_accepted():
    config = AE(
        compression_ratio=1.0001,
        seed=0,
        l1_power_decay_epochs=0,
        svd_power_iterations=0,
        svd_oversamples=0,
        embed_scale=-2,
        decoder_hidden_dims=[1],
        lr_gamma=0,
        learning_rate=10**300,
    )
    assert config.learning_rate == 10**300 and config.embed_scale == -2
    assert AE(compression_ratio=10**300).compression_ratio == 10**300


@pytest.mark.parametrize("name", ["compression_ratio", "learning_rate", "cosine_weight", "rmse_weight", "embed_scale"])
def test_ints_too_large_for_a_float_are_rejected_not_crashed_on(name):
    with pytest.raises(CompressedEmbeddingConfigError, match=f"{name} is invalid: got {10**400}"):
        AE(**{name: 10**400})


def test_validate_rechecks_after_mutation():
    config = AE()
    config.batch_size = 0
    with pytest.raises(CompressedEmbeddingConfigError, match="batch_size is invalid: got 0"):
        config.validate()


# ---------------------------------------------------------------------------------------------- (de)serialisation
def test_to_dict_from_dict_round_trip_through_json():
    config = AE(
        method="autoencoder",
        compression_ratio=2.5,
        decoder_hidden_dims=[8],
        decoder_activation="gelu",
        decoder_bias=False,
        max_steps=100,
        init="svd",
        freeze_codes=False,
    ).resolved(num_embeddings=99, embedding_dim=32, padding_idx=0, embed_scale=5.5, zero_padding_row=True)
    data = config.to_dict()
    assert set(data) == set(LAYER_FIELDS)
    assert set(data["method_config"]) == {f.name for f in dataclasses.fields(type(config.method_config))}
    again = CompressedEmbeddingConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config and again.to_dict() == data
    data["decoder_hidden_dims"].append(7)  # to_dict returns a copy
    assert config.decoder_hidden_dims == [8]


def test_unknown_keys_are_dropped_with_a_warning(caplog):
    data = {**AE(code_dim=4).to_dict(), "quantize_codes": True, "zz_future": 1}
    with caplog.at_level(logging.WARNING):
        config = CompressedEmbeddingConfig.from_dict(data)
    assert config == AE(code_dim=4)
    assert "quantize_codes" in caplog.text and "zz_future" in caplog.text and "Ignoring unknown keys" in caplog.text
    # Keys of any type are reported, not crashed on.
    with caplog.at_level(logging.WARNING):
        assert CompressedEmbeddingConfig.from_dict({1: "x", "zz": 2, "seed": 3}).seed == 3


def test_newer_format_version_asks_to_upgrade():
    data = {**AE(code_dim=4).to_dict(), "format_version": FORMAT_VERSION + 1}
    with pytest.raises(CompressedEmbeddingConfigError, match="Upgrade") as info:
        CompressedEmbeddingConfig.from_dict(data)
    assert f"format_version {FORMAT_VERSION + 1}" in str(info.value)
    # A newer format may have new methods or renamed fields: the upgrade hint comes first.
    newer = {"format_version": FORMAT_VERSION + 1, "method": "quantized", "library_version": "9.0"}
    with pytest.raises(CompressedEmbeddingConfigError, match="Upgrade.*") as info:
        CompressedEmbeddingConfig.from_dict(newer, require_resolved=True)
    assert "9.0" in str(info.value)
    with pytest.raises(CompressedEmbeddingConfigError, match="Upgrade"):
        AE(format_version=FORMAT_VERSION + 1)


def test_require_resolved_names_the_missing_fields():
    resolved = AE(code_dim=4).resolved(num_embeddings=99, embedding_dim=32).to_dict()
    assert CompressedEmbeddingConfig.from_dict(resolved, require_resolved=True).code_dim == 4
    for drop in (["code_dim"], ["num_embeddings", "embedding_dim"]):
        data = {k: v for k, v in resolved.items() if k not in drop}
        with pytest.raises(CompressedEmbeddingConfigError) as info:
            CompressedEmbeddingConfig.from_dict(data, require_resolved=True)
        assert all(repr(name) in str(info.value) for name in drop)
        CompressedEmbeddingConfig.from_dict(data)  # fine when not required


@pytest.mark.parametrize("block", [None, [], "svd", 3])
def test_from_dict_needs_a_mapping(block):
    with pytest.raises(CompressedEmbeddingConfigError, match="must be a JSON object"):
        CompressedEmbeddingConfig.from_dict(block)


def test_presets():
    paper = CompressedEmbeddingConfig.preset("paper")
    assert paper == AE() and paper != CompressedEmbeddingConfig()
    assert CompressedEmbeddingConfig.preset("transform_coding") == CompressedEmbeddingConfig()
    assert CompressedEmbeddingConfig.preset("paper", compression_ratio=5).cosine_weight == 0.1995
    svd = CompressedEmbeddingConfig.preset("svd", code_dim=8)
    assert svd.method == "svd" and svd.code_dim == 8 and svd.compression_ratio is None
    with pytest.raises(CompressedEmbeddingConfigError, match="'bogus'.*'paper', 'svd'"):
        CompressedEmbeddingConfig.preset("bogus")
    with pytest.raises(CompressedEmbeddingConfigError, match="compression_ratio"):
        CompressedEmbeddingConfig.preset("paper", compression_ratio=0.5)


# ---------------------------------------------------------------------------------------------- properties
def _any_value():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**400), 10**400),
        st.integers(-5, 5000),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.sampled_from(["autoencoder", "svd", "elu", "gelu", "random", "exact", "auto", __version__]),
        st.lists(st.one_of(st.integers(-2, 300), st.booleans(), st.floats(0, 10)), max_size=3),
        st.tuples(st.integers(1, 300)),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


def _plausible_value(name):
    """Mostly valid values for `name`, so that the property test also exercises the success path."""
    plausible = {
        "method": st.sampled_from(["autoencoder", "svd"]),
        "decoder_activation": st.sampled_from(["elu", "gelu", "relu", "silu", "tanh"]),
        "svd_solver": st.sampled_from(["auto", "exact", "randomized"]),
        "init": st.sampled_from(["random", "svd"]),
        "decoder_hidden_dims": st.lists(st.integers(1, 512), max_size=3),
        "decoder_bias": st.sampled_from([None, True, False]),
        "library_version": st.text(max_size=8),
        "format_version": st.integers(1, FORMAT_VERSION),
        "compression_ratio": st.one_of(st.none(), st.floats(1.0001, 1e6), st.integers(2, 1000)),
        "embed_scale": st.floats(0.01, 100),
        "padding_idx": st.one_of(st.none(), st.integers(-5, 5)),
        "base_model": st.one_of(st.none(), st.text(max_size=8)),
        "tensor_sha256": st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.just("0123456789abcdef" * 4))),
    }
    if name in plausible:
        return plausible[name]
    default = FIELDS[name].default
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, float):
        return st.one_of(st.floats(0.001, 100), st.integers(10**300, 10**400))  # huge ints are finite numbers
    if name in ("code_dim", "max_steps", "num_embeddings", "embedding_dim"):
        return st.one_of(st.none(), st.integers(1, 10_000))
    return st.integers(1, 100)


@st.composite
def _field_dicts(draw):
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=len(FIELDS)))
    data = {}
    for name in names:
        data[name] = draw(
            st.one_of(_plausible_value(name), _any_value()) if draw(st.booleans()) else _plausible_value(name)
        )
    unknown_keys = st.one_of(st.text(min_size=1, max_size=6).filter(lambda k: k not in FIELDS), st.integers())
    for key in draw(st.lists(unknown_keys, max_size=2)):
        data[key] = draw(_any_value())
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_field_dicts(), require_resolved=st.booleans())
def test_from_dict_round_trips_or_raises_config_error(data, require_resolved):
    try:
        config = CompressedEmbeddingConfig.from_dict(data, require_resolved=require_resolved)
    except CompressedEmbeddingConfigError as error:
        assert str(error)
        return
    out = config.to_dict()
    settings = out["method_config"]  # the method's settings are nested; another method's are checked, then dropped
    for name, value in data.items():
        if name not in FIELDS:
            assert name not in out
        elif name not in LAYER_FIELDS:
            assert name not in out
            if name in settings:
                assert settings[name] == value and type(settings[name]) is type(value)
            else:  # a setting of another method
                assert name not in {f.name for f in dataclasses.fields(config.method_config)}
        elif name == "compression_ratio" and value is None and config.code_dim is None:
            assert out[name] == 10.0
        elif name == "format_version":  # read into the current format; written as 2 unless it needs 3 (output_head)
            assert config.format_version == FORMAT_VERSION and out[name] == 2
        elif name == "decoder_bias" and value is None and data.get("format_version") == 1:  # format 1's rule
            assert out[name] == (config.method != "svd")
        elif name == "codes_dtype" and value is None and getattr(config.method_class, "packed_codes", False):
            assert out[name] == "packed"  # the method's storage
        elif name == "decoder_hidden_dims" and isinstance(value, tuple):
            assert out[name] == list(value)
        else:
            assert out[name] == value and type(out[name]) is type(value)
    assert CompressedEmbeddingConfig.from_dict(out) == config
    assert CompressedEmbeddingConfig.from_dict(out).to_dict() == out
    if require_resolved:
        assert config.is_resolved


@settings(max_examples=150, deadline=None)
@given(
    data=_field_dicts(),
    vocab=st.one_of(st.integers(-2, 50_000), st.none()),
    hidden=st.one_of(st.integers(-2, 2048), st.none()),
)
def test_resolved_succeeds_or_raises_config_error(data, vocab, hidden):
    try:
        config = CompressedEmbeddingConfig.from_dict(data)
        resolved = config.resolved(num_embeddings=vocab, embedding_dim=hidden)
    except CompressedEmbeddingConfigError:
        return
    if resolved.method == "transform_coding":  # keeps every component; the ratio sets the bits instead
        assert resolved.is_resolved and resolved.code_dim == hidden
        return
    assert resolved.is_resolved and 1 <= resolved.code_dim < hidden
    if config.code_dim is None:
        assert (
            vocab * hidden / resolved.stored_parameters(vocab, hidden, resolved.code_dim) >= config.compression_ratio
        )


# ---------------------------------------------------------------------------------------------- per-family configs
def test_compressed_config_class_subclasses_the_family():
    cls = compressed_config_class(LlamaConfig)
    assert issubclass(cls, LlamaConfig) and issubclass(cls, PreTrainedConfig)
    assert cls.__name__ == "CompressedLlamaConfig" and cls.model_type == "compressed_llama"
    assert cls.base_config_class is LlamaConfig
    assert compressed_config_class(LlamaConfig) is cls  # cached
    assert compressed_config_class(cls) is cls  # idempotent
    assert LlamaConfig.model_type == "llama"  # the base class is untouched
    with pytest.raises(TypeError, match="transformers config class"):
        compressed_config_class(dict)


def test_compressed_config_keeps_base_fields(tmp_path):
    cls = compressed_config_class(LlamaConfig)
    block = AE(method="svd", code_dim=8).resolved(num_embeddings=99, embedding_dim=32)
    config = cls(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=3,
        finetuning_task="sst2",
        compressed_embedding=block.to_dict(),
    )
    assert config.num_labels == 3 and config.finetuning_task == "sst2"
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    config.label2id = {"neg": 0, "pos": 1}
    config.id2label = {0: "neg", 1: "pos"}
    assert config.num_labels == 2

    data = config.to_dict()
    assert data["model_type"] == "compressed_llama" and data["compressed_embedding"] == block.to_dict()
    again = cls.from_dict(data)
    assert isinstance(again, cls) and again.compressed_embedding == block.to_dict()
    assert again.label2id == {"neg": 0, "pos": 1} and again.num_labels == 2 and again.finetuning_task == "sst2"

    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["model_type"] == "compressed_llama" and on_disk["compressed_embedding"] == block.to_dict()
    for loader in (cls, AutoConfig):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is cls
        assert loaded.compressed_embedding == block.to_dict()
        assert CompressedEmbeddingConfig.from_dict(loaded.compressed_embedding, require_resolved=True) == block
        assert loaded.id2label == {0: "neg", 1: "pos"} and loaded.finetuning_task == "sst2"
        assert loaded.vocab_size == 99 and loaded.hidden_size == 32


def test_compressed_config_without_block_defaults_to_none():
    config = compressed_config_class(BertConfig)(vocab_size=99)
    assert config.compressed_embedding is None
    assert BertConfig(vocab_size=99).to_dict().get("compressed_embedding") is None


def test_config_classes_are_built_lazily_by_name():
    cls = configuration.CompressedBertConfig
    assert cls is compressed_config_class(BertConfig)
    assert issubclass(cls, BertConfig) and cls.model_type == "compressed_bert"
    assert configuration.CompressedGemma3TextConfig.model_type == "compressed_gemma3_text"
    assert configuration.CompressedPhi3Config.base_config_class is transformers.Phi3Config
    for missing in ("CompressedNoSuchFamilyConfig", "CompressedBertModel", "NotAConfig"):
        with pytest.raises(AttributeError):
            getattr(configuration, missing)


def test_block_round_trips_through_a_model_config(tmp_path):
    """A compressed model's config (built by name, as `auto_map` does) carries the block through save/load."""
    cls = configuration.CompressedBertConfig
    block = AE(code_dim=4, decoder_hidden_dims=[16]).resolved(
        num_embeddings=99, embedding_dim=32, padding_idx=0, zero_padding_row=True, tied_output_head=True
    )
    config = cls(vocab_size=99, hidden_size=32, num_attention_heads=4, compressed_embedding=block.to_dict())
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is cls
    assert CompressedEmbeddingConfig.from_dict(loaded.compressed_embedding, require_resolved=True) == block
