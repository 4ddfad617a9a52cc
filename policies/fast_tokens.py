"""FAST action tokenizer (Pertsch et al. 2025): a DCT along time, scaled integer coefficients, then BPE.

FAST ("Frequency-space Action Sequence Tokenization") compresses a chunk of normalised actions (T, D) in
[-1, 1] in three steps: an orthonormal DCT-II along time per action dimension (smooth chunks put almost
all energy into the first coefficients), scaling by `scale` and rounding to integers (most high-frequency
coefficients become 0), and byte-pair encoding of the flattened integers (coefficient 0 of every dimension,
then coefficient 1 of every dimension, ...), which merges the long runs of zeros into few tokens.

Integers k are offset by `min_token` (the smallest coefficient seen when fitting) and written as the
characters chr(k - min_token), so the BPE alphabet is chr(0) .. chr(max_token - min_token) and every
alphabet character is a token: any id sequence decodes back to exact integers.

Round-trip error (proved here, checked in tests/policies/test_fast_tokens.py): if no coefficient of a chunk
falls outside [min_token, max_token] (`encode_with_status` reports this), rounding moves each scaled
coefficient by at most 0.5, i.e. each DCT coefficient by e_k with |e_k| <= 0.5 / scale. The inverse DCT is
orthonormal, so the error at time t is sum_k C[k, t] e_k with sum_k C[k, t]^2 = 1, and by Cauchy-Schwarz
|error| <= 0.5 / scale * sqrt(T) per element (also the bound on the L2 error of each dimension's series).
Coefficients outside the fitted range are clipped to it, which can make the error larger.
"""
from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.fft
from tokenizers import Tokenizer, decoders, models, trainers

_FORMAT = "fast-action-tokenizer"
_VERSION = 1
# Characters from U+D800 on include surrogates, which Rust strings (and so `tokenizers`) cannot hold.
_MAX_ALPHABET = 0xD800


def _dct_tokens(chunk: np.ndarray, scale: float) -> np.ndarray:
    """(T, D) chunk -> (T*D,) rounded scaled DCT coefficients, coefficient-major."""
    a = np.asarray(chunk, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"an action chunk must have shape (T, D), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("an action chunk contains NaN or infinite values")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    coeffs = scipy.fft.dct(a, type=2, norm="ortho", axis=0)
    return np.rint(coeffs * scale).astype(np.int64).reshape(-1)


class FastActionTokenizer:
    """Normalised action chunks (T, D) in [-1, 1] <-> BPE token ids in [0, vocab_size)."""

    def __init__(self, tokenizer: Tokenizer, scale: float, min_token: int, max_token: int) -> None:
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        if int(max_token) < int(min_token):
            raise ValueError(f"max_token={max_token} < min_token={min_token}")
        self._tokenizer = tokenizer
        self._scale = scale
        self._min_token = int(min_token)
        self._max_token = int(max_token)
        vocab = tokenizer.get_vocab()
        if sorted(vocab.values()) != list(range(len(vocab))):  # checked before a list is sized by the ids
            raise ValueError("the BPE vocabulary's ids are not 0..n-1, each once")
        # Decoding concatenates vocabulary strings by id: exact, whatever decoder the JSON names.
        self._id_to_token: list[str] = [""] * len(vocab)
        for token, idx in vocab.items():
            self._id_to_token[idx] = token
        alphabet_size = self._max_token - self._min_token + 1
        missing = [k for k in range(alphabet_size) if chr(k) not in vocab]
        if missing:
            raise ValueError(f"the BPE vocabulary lacks alphabet characters chr({missing[0]}) and "
                             f"{len(missing) - 1} more; it cannot encode every token in [min_token, max_token]")
        if any(ord(c) >= alphabet_size for token in vocab for c in token):
            raise ValueError("the BPE vocabulary holds characters outside the alphabet chr(0..max_token-min_token)")

    @property
    def vocab_size(self) -> int:
        """Number of ids of the trained BPE vocabulary (may be below the requested size)."""
        return self._tokenizer.get_vocab_size()

    @property
    def scale(self) -> float:
        """Multiplier of the DCT coefficients before rounding."""
        return self._scale

    @property
    def min_token(self) -> int:
        """Smallest integer coefficient of the fitting data; it maps to chr(0)."""
        return self._min_token

    @property
    def max_token(self) -> int:
        """Largest integer coefficient of the fitting data; larger ones are clipped to it."""
        return self._max_token

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (raw string in, no normalizer or pre-tokenizer)."""
        return self._tokenizer

    def error_bound(self, steps: int) -> float:
        """Max abs round-trip error per element for a chunk of `steps` steps whose coefficients were not clipped."""
        return 0.5 / self._scale * math.sqrt(steps)

    @classmethod
    def fit(cls, chunks: Sequence[np.ndarray], vocab_size: int, scale: float = 10.0) -> FastActionTokenizer:
        """Train the BPE vocabulary on normalised (T, D) chunks (T may vary); deterministic."""
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        tokens = [_dct_tokens(c, scale) for c in chunks]
        tokens = [t for t in tokens if t.size]
        if not tokens:
            raise ValueError("fit needs at least one non-empty action chunk")
        min_token = int(min(t.min() for t in tokens))
        max_token = int(max(t.max() for t in tokens))
        alphabet_size = max_token - min_token + 1
        if alphabet_size > vocab_size:
            raise ValueError(f"the DCT tokens span {min_token}..{max_token} at scale {scale}: an alphabet of "
                             f"{alphabet_size} symbols, larger than vocab_size={vocab_size}; "
                             f"need vocab_size >= {alphabet_size} (or a smaller scale)")
        if alphabet_size > _MAX_ALPHABET:
            raise ValueError(f"an alphabet of {alphabet_size} symbols exceeds the {_MAX_ALPHABET} supported")
        alphabet = [chr(k) for k in range(alphabet_size)]
        tokenizer = Tokenizer(models.BPE())
        # No normalizer or pre-tokenizer: the whole string is one BPE word. Fuse joins tokens without spaces
        # for callers who use tokenizer.decode; our own decode does not rely on it.
        tokenizer.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[],
                                      min_frequency=0, show_progress=False)
        tokenizer.train_from_iterator([cls._to_text(t - min_token) for t in tokens], trainer=trainer)
        return cls(tokenizer, scale, min_token, max_token)

    @staticmethod
    def _to_text(shifted: np.ndarray) -> str:
        return "".join(map(chr, shifted.tolist()))

    def _text(self, chunk: np.ndarray) -> tuple[str, bool]:
        tokens = _dct_tokens(chunk, self._scale)
        clipped = np.clip(tokens, self._min_token, self._max_token)
        return self._to_text(clipped - self._min_token), bool(np.array_equal(clipped, tokens))

    def encode_with_status(self, chunk: np.ndarray) -> tuple[list[int], bool]:
        """(ids, in_range); in_range is False if a coefficient was clipped to [min_token, max_token]."""
        text, in_range = self._text(chunk)
        return self._tokenizer.encode(text).ids, in_range

    def encode(self, chunk: np.ndarray) -> list[int]:
        """(T, D) normalised chunk -> token ids."""
        return self.encode_with_status(chunk)[0]

    def encode_batch(self, chunks: np.ndarray | Sequence[np.ndarray]) -> list[list[int]]:
        """(N, T, D) chunks (or a sequence of (T, D) chunks) -> one id list per chunk."""
        texts = [self._text(c)[0] for c in chunks]
        return [e.ids for e in self._tokenizer.encode_batch(texts)]

    def decode_with_status(self, ids: Iterable[int], steps: int, dim: int) -> tuple[np.ndarray, bool]:
        """(actions (steps, dim) float64, valid); never raises on bad ids or a wrong token count."""
        if steps < 0 or dim < 0:
            raise ValueError(f"steps and dim must be non-negative, got steps={steps}, dim={dim}")
        valid = True
        pieces: list[str] = []
        seq = ids.tolist() if hasattr(ids, "tolist") else ids
        if not isinstance(seq, Iterable):  # a 0-d array's tolist() is a scalar
            seq = [seq]
        for raw in seq:
            try:
                idx = operator.index(raw)
            except TypeError:
                valid = False
                continue
            token = self._id_to_token[idx] if 0 <= idx < len(self._id_to_token) else None
            if token is None:
                valid = False  # a model can sample an id outside this vocabulary: skip it
                continue
            pieces.append(token)
        values = np.fromiter((ord(c) for c in "".join(pieces)), dtype=np.int64) + self._min_token
        count = steps * dim
        if values.size != count:
            valid = False
            values = np.concatenate([values, np.zeros(max(count - values.size, 0), np.int64)])[:count]
        coeffs = values.reshape(steps, dim).astype(np.float64) / self._scale
        if coeffs.size == 0:
            return coeffs, valid
        return scipy.fft.idct(coeffs, type=2, norm="ortho", axis=0), valid

    def decode(self, ids: Iterable[int], steps: int, dim: int) -> np.ndarray:
        """Token ids -> (steps, dim) float64 actions; invalid sequences are repaired (see decode_with_status)."""
        return self.decode_with_status(ids, steps, dim)[0]

    def to_json(self) -> str:
        """One JSON string holding the `tokenizers` JSON, scale, min_token and max_token."""
        return json.dumps({"format": _FORMAT, "version": _VERSION, "scale": self._scale, "min_token": self._min_token,
                           "max_token": self._max_token, "tokenizer": self._tokenizer.to_str()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FastActionTokenizer:
        """Inverse of to_json; ValueError naming what is missing or malformed."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"FastActionTokenizer JSON does not parse: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"FastActionTokenizer JSON must be an object, got {type(data).__name__}")
        missing = [k for k in ("scale", "min_token", "max_token", "tokenizer") if k not in data]
        if missing:
            raise ValueError(f"FastActionTokenizer JSON is missing {', '.join(missing)}")
        if data.get("format", _FORMAT) != _FORMAT or data.get("version", _VERSION) != _VERSION:
            raise ValueError(f"unsupported format {data.get('format')!r} version {data.get('version')!r}")
        for key in ("min_token", "max_token"):
            if not isinstance(data[key], int) or isinstance(data[key], bool):
                raise ValueError(f"{key} must be an integer, got {data[key]!r}")
        if not isinstance(data["scale"], (int, float)) or isinstance(data["scale"], bool):
            raise ValueError(f"scale must be a number, got {data['scale']!r}")
        if not isinstance(data["tokenizer"], str):
            raise ValueError("tokenizer must be the tokenizers JSON as a string")
        try:
            tokenizer = Tokenizer.from_str(data["tokenizer"])
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"tokenizer is not a valid tokenizers JSON: {e}") from e
        spec = json.loads(data["tokenizer"])
        if spec.get("model", {}).get("type") != "BPE" or spec.get("normalizer") or spec.get("pre_tokenizer"):
            raise ValueError("tokenizer must be a BPE model with no normalizer and no pre-tokenizer")
        return cls(tokenizer, data["scale"], data["min_token"], data["max_token"])
