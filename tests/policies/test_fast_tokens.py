"""FAST action tokenizer: round-trip error bound, compression, coefficient order, invalid ids, determinism, JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.fft

from policies.fast_tokens import FastActionTokenizer

DIM = 3


def _smooth_chunks(n: int, steps: int, seed: int) -> np.ndarray:
    """(n, steps, DIM) smooth chunks in [-1, 1]: offset + linear + quadratic in time, like normalised motions."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    offset = rng.uniform(-1, 1, (n, 1, DIM))
    slope = rng.uniform(-0.5, 0.5, (n, 1, DIM))
    curve = rng.uniform(-0.3, 0.3, (n, 1, DIM))
    return np.clip(offset + slope * t + curve * t**2, -1.0, 1.0)


def _training_chunks(seed: int = 0) -> list[np.ndarray]:
    return [*_smooth_chunks(1500, 8, seed), *_smooth_chunks(300, 3, seed + 1), *_smooth_chunks(300, 2, seed + 2)]


@pytest.fixture(scope="module")
def tok() -> FastActionTokenizer:
    return FastActionTokenizer.fit(_training_chunks(), vocab_size=256)


@pytest.mark.parametrize("steps", [2, 3, 8])
def test_round_trip_within_bound(tok, steps):
    chunks = _smooth_chunks(200, steps, seed=100 + steps)
    worst = 0.0
    for chunk in chunks:
        ids, in_range = tok.encode_with_status(chunk)
        assert in_range
        decoded, valid = tok.decode_with_status(ids, steps, DIM)
        assert valid and decoded.shape == (steps, DIM) and decoded.dtype == np.float64
        worst = max(worst, float(np.abs(decoded - chunk).max()))
    print(f"T={steps}: max round-trip error {worst:.4f}, bound {tok.error_bound(steps):.4f}")
    assert 0 < worst <= tok.error_bound(steps)  # quantisation does happen, and stays within 0.5/scale*sqrt(T)


def test_integer_coefficients_round_trip_exactly_in_coefficient_major_order(tok):
    # A chunk whose scaled DCT coefficients are integers: nothing to round, so decoding is exact, and the
    # string holds coefficient 0 of every dim, then coefficient 1 of every dim, ...
    k = np.array([[12, -7, 3], [-4, 2, 0], [1, 0, -1], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    chunk = scipy.fft.idct(k / tok.scale, type=2, norm="ortho", axis=0)
    ids = tok.encode(chunk)
    text = tok.tokenizer.decode(ids)  # the Fuse decoder joins tokens without spaces
    assert [ord(c) + tok.min_token for c in text] == k.reshape(-1).tolist()
    np.testing.assert_allclose(tok.decode(ids, 8, DIM), chunk, atol=1e-12)


def test_bpe_compresses_smooth_chunks(tok):
    chunks = _smooth_chunks(500, 8, seed=7)
    ids = tok.encode_batch(chunks)
    assert ids == [tok.encode(c) for c in chunks]
    mean = float(np.mean([len(i) for i in ids]))
    print(f"mean tokens per smooth 8x{DIM} chunk at vocab {tok.vocab_size}: {mean:.2f} (raw {8 * DIM})")
    assert mean < 12


def test_ids_in_vocabulary(tok):
    assert tok.vocab_size == 256
    ids = [i for c in _smooth_chunks(100, 8, seed=3) for i in tok.encode(c)]
    # Include chunks outside [-1, 1]: their coefficients are clipped, never dropped.
    wild = np.random.default_rng(4).uniform(-5, 5, (20, 8, DIM))
    ids += [i for c in wild for i in tok.encode(c)]
    assert min(ids) >= 0 and max(ids) < tok.vocab_size


def test_out_of_range_chunk_is_clipped_not_dropped(tok):
    chunk = np.full((8, DIM), 4.0)  # coefficient 0 is 4*sqrt(8)*scale ~ 113, beyond max_token
    ids, in_range = tok.encode_with_status(chunk)
    assert not in_range
    decoded, valid = tok.decode_with_status(ids, 8, DIM)
    assert valid  # the right number of symbols came back
    np.testing.assert_allclose(decoded, tok.max_token / tok.scale / np.sqrt(8), atol=1e-12)


def test_invalid_sequences_decode_without_raising(tok):
    chunk = _smooth_chunks(1, 8, seed=5)[0]
    ids = tok.encode(chunk)
    good, valid = tok.decode_with_status(ids, 8, DIM)
    assert valid
    cases = {
        "out of vocabulary": [*ids, tok.vocab_size, -1, 10**12],
        "not an integer": [*ids, 2.5, "x", None],
        "too short": ids[:-1],
        "too long": ids + ids,
        "empty": [],
        "a scalar": ids[0],
    }
    for name, bad in cases.items():
        decoded, valid = tok.decode_with_status(bad, 8, DIM)
        assert not valid, name
        assert decoded.shape == (8, DIM) and np.isfinite(decoded).all(), name
        np.testing.assert_array_equal(tok.decode(bad, 8, DIM), decoded)
    # Skipped ids leave the valid ones intact.
    np.testing.assert_array_equal(tok.decode_with_status(cases["out of vocabulary"], 8, DIM)[0], good)
    np.testing.assert_array_equal(tok.decode(np.asarray(ids), 8, DIM), good)
    np.testing.assert_array_equal(tok.decode([], 0, DIM), np.zeros((0, DIM)))


def test_fit_is_deterministic():
    chunks = _training_chunks(seed=11)[::4]
    a = FastActionTokenizer.fit(chunks, vocab_size=200)
    b = FastActionTokenizer.fit(chunks, vocab_size=200)
    assert a.to_json() == b.to_json()


def test_json_round_trip(tok):
    text = tok.to_json()
    assert isinstance(json.loads(text)["tokenizer"], str)
    again = FastActionTokenizer.from_json(text)
    assert again.to_json() == text
    assert (again.scale, again.min_token, again.max_token, again.vocab_size) == (
        tok.scale, tok.min_token, tok.max_token, tok.vocab_size)
    chunks = _smooth_chunks(50, 8, seed=9)
    assert again.encode_batch(chunks) == tok.encode_batch(chunks)


def test_from_json_rejects_bad_input(tok):
    data = json.loads(tok.to_json())
    with pytest.raises(ValueError, match="parse"):
        FastActionTokenizer.from_json("{not json")
    with pytest.raises(ValueError, match="object"):
        FastActionTokenizer.from_json("[]")
    with pytest.raises(ValueError, match="tokenizer"):
        FastActionTokenizer.from_json(json.dumps({k: v for k, v in data.items() if k != "tokenizer"}))
    with pytest.raises(ValueError, match="min_token"):
        FastActionTokenizer.from_json(json.dumps({**data, "min_token": "0"}))
    with pytest.raises(ValueError, match="tokenizers JSON"):
        FastActionTokenizer.from_json(json.dumps({**data, "tokenizer": '{"model": 3}'}))
    # An alphabet wider than the vocabulary can hold.
    with pytest.raises(ValueError, match="alphabet"):
        FastActionTokenizer.from_json(json.dumps({**data, "max_token": data["max_token"] + 500}))


@pytest.mark.parametrize("edit", ["huge", "duplicate"])
def test_a_vocabulary_whose_ids_are_not_0_to_n_is_refused_at_once(tok, edit):
    """Ids must be 0..n-1, each once: a huge id would otherwise size a list of that length (gigabytes)."""
    data = json.loads(tok.to_json())
    inner = json.loads(data["tokenizer"])
    vocab = inner["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    vocab[last] = 10**12 if edit == "huge" else 0
    data["tokenizer"] = json.dumps(inner)
    with pytest.raises(ValueError):
        FastActionTokenizer.from_json(json.dumps(data))


def test_alphabet_larger_than_vocab_is_an_error():
    chunks = _smooth_chunks(20, 8, seed=2)
    with pytest.raises(ValueError, match=r"need vocab_size >= \d+"):
        FastActionTokenizer.fit(chunks, vocab_size=10)


def test_vocab_size_is_the_trained_size_and_fit_checks_input():
    small = FastActionTokenizer.fit([np.zeros((2, DIM)), np.full((2, DIM), 0.1)], vocab_size=1000)
    assert small.vocab_size < 1000
    assert small.max_token - small.min_token + 1 <= small.vocab_size
    with pytest.raises(ValueError, match="non-empty"):
        FastActionTokenizer.fit([], vocab_size=100)
    with pytest.raises(ValueError, match="T, D"):
        FastActionTokenizer.fit([np.zeros(5)], vocab_size=100)
    with pytest.raises(ValueError, match="scale"):
        FastActionTokenizer.fit([np.zeros((2, DIM))], vocab_size=100, scale=0.0)
