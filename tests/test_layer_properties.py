"""Property-based tests (hypothesis) of `CompressedEmbedding` and `CompressedOutputHead`: for random vocabulary and
hidden sizes, code widths, dtypes, padding indices, decoders and codes storage, the shapes hold, a lookup is the
matching row of `weight`, and the tied head computes `hidden @ weight.T (+ bias)`.

Tolerances follow floating-point error analysis: a sum of n products in a dtype of machine epsilon `eps` is off by
at most about `n * eps * sum(|a| |b|)`; we allow a few `eps` times that bound of magnitudes (`4 * eps * B`), which
every real bug (a missing bias, a wrong row, a forgotten scale) exceeds by orders of magnitude. The config's own
properties are in test_config.py.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressed_embeddings import CompressedEmbedding, CompressedOutputHead

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@st.composite
def layers(draw):
    vocab = draw(st.integers(1, 64))
    hidden = draw(st.integers(2, 48))
    code_dim = draw(st.integers(1, hidden - 1))
    padding_idx = draw(st.one_of(st.none(), st.integers(-vocab, vocab - 1)))
    codes_dtype = draw(st.sampled_from([None, "float16", "bfloat16", "int8"]))
    dtype = draw(st.sampled_from(DTYPES))
    layer = CompressedEmbedding(
        vocab,
        hidden,
        code_dim,
        decoder_hidden_dims=draw(st.sampled_from([[], [], [draw(st.integers(1, 16))]])),
        decoder_activation=draw(st.sampled_from(["elu", "gelu", "relu", "silu", "tanh"])),
        decoder_bias=draw(st.booleans()),
        padding_idx=padding_idx,
        embed_scale=draw(st.sampled_from([1.0, hidden**0.5, -0.5])),
        zero_padding_row=draw(st.booleans()),
        freeze_codes=codes_dtype == "int8" or draw(st.booleans()),
        codes_dtype=codes_dtype,
        dtype=dtype,
    )
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    layer.reset_parameters()
    batch = draw(st.tuples(st.integers(1, 3), st.integers(1, 5)))
    ids = torch.randint(0, vocab, batch, generator=torch.Generator().manual_seed(seed))
    if padding_idx is not None and draw(st.booleans()):
        ids[0, 0] = padding_idx % vocab  # make sure the padding token is looked up
    return layer, ids, padding_idx


def _linear_bound(layer: CompressedEmbedding, left: torch.Tensor) -> torch.Tensor:
    """`|left| @ |W| @ |C|^T + |left| @ |b|` in float64: the magnitudes a code-space `left @ weight.T` sums."""
    weight, bias = layer.decoder.weight.double().abs(), layer.decoder.bias
    bound = (left.double().abs() @ weight) @ layer.dense_codes().double().abs().T
    return bound if bias is None else bound + (left.double().abs() @ bias.double().abs()).unsqueeze(-1)


@settings(max_examples=100, deadline=None)
@given(layers())
def test_shapes_dtypes_and_padding(args):
    layer, ids, padding_idx = args
    vocab, hidden, code_dim = layer.num_embeddings, layer.embedding_dim, layer.code_dim
    dtype = layer.compute_dtype
    assert layer.codes.shape == (vocab, code_dim)
    with torch.no_grad():
        weight, out = layer.weight, layer(ids)
    assert weight.shape == (vocab, hidden) and weight.dtype == dtype
    assert out.shape == (*ids.shape, hidden) and out.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(weight).all()
    assert layer.padding_idx == (None if padding_idx is None else padding_idx % vocab)
    if layer.zero_padding_row:
        assert not weight[layer.padding_idx].any()
        assert not out[ids == layer.padding_idx].any()


@settings(max_examples=100, deadline=None)
@given(layers())
def test_lookup_is_the_row_of_weight_times_the_scale(args):
    layer, ids, _ = args
    eps = torch.finfo(layer.compute_dtype).eps
    with torch.no_grad():
        out = layer(ids).double()
        expected = layer.weight[ids].double() * layer.embed_scale
        if layer.is_linear:
            bound = _linear_bound(layer, torch.eye(layer.embedding_dim))  # (V, d): |C| |W|^T + |b|
            bound = bound.T[ids] * abs(layer.embed_scale)
        else:
            bound = torch.full_like(out, float(expected.abs().max()) * layer.code_dim)
    assert ((out - expected).abs() <= 4 * eps * bound + 1e-30).all(), float((out - expected).abs().max())


@settings(max_examples=100, deadline=None)
@given(layers(), st.booleans())
def test_tied_head_is_hidden_times_weight_transposed(args, with_bias):
    layer, ids, _ = args
    dtype = layer.compute_dtype
    eps = torch.finfo(dtype).eps
    head = CompressedOutputHead(layer, bias=with_bias)
    generator = torch.Generator().manual_seed(ids.numel())
    if with_bias:
        with torch.no_grad():
            head.bias.copy_(torch.randn(layer.num_embeddings, generator=generator))
    hidden = torch.randn(*ids.shape, layer.embedding_dim, generator=generator).to(dtype)
    with torch.no_grad():
        logits = head(hidden)
        weight = layer.weight.double()
    assert logits.shape == (*ids.shape, layer.num_embeddings) and logits.dtype == dtype
    assert head.weight.shape == (layer.num_embeddings, layer.embedding_dim)
    assert (head.in_features, head.out_features) == (layer.embedding_dim, layer.num_embeddings)
    expected = hidden.double() @ weight.T
    if with_bias:
        expected = expected + head.bias.double()
    if layer.is_linear:  # computed in code space: (h W) C^T + h.b
        bound = _linear_bound(layer, hidden)
    else:  # computed as h @ weight.T
        bound = hidden.double().abs() @ weight.abs().T
    if with_bias:
        bound = bound + head.bias.double().abs()
    error = (logits.double() - expected).abs()
    assert (error <= 4 * eps * bound + 1e-30).all(), (float(error.max()), float(bound.max()))
    if layer.zero_padding_row:  # the padding row is zero: its logit is the bias alone
        padding_logits = logits[..., layer.padding_idx].double()
        padding_bias = head.bias[layer.padding_idx].double() if with_bias else torch.zeros((), dtype=torch.double)
        assert torch.equal(padding_logits, padding_bias.expand_as(padding_logits))
