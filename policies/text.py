"""Word-level tokenizer for navigation instructions ("turn left at the next intersection"): fixed, deterministic vocabulary."""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch

TEXT_SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")

# The instruction vocabulary, frozen: ids are positions in this tuple after the specials, so the
# same word always maps to the same id (appending words keeps old ids valid).
TEXT_WORDS: tuple[str, ...] = (
    "turn", "left", "right", "go", "straight", "follow", "the", "current", "lane", "merge", "onto",
    "highway", "at", "next", "intersection", "keep", "change", "to", "continue", "stop", "slow",
    "down", "exit", "take", "roundabout", "u-turn", "make", "a", "ahead", "drive", "forward",
    "road", "first", "second", "third", "unknown", "and", "then", "into", "on", "off", "ramp",
    "yield", "park", "pull", "over", "lanes", "junction", "crossing", "traffic", "light",
    # Qwen chat template: roles and the official system prompt ("You are a helpful assistant.")
    "system", "user", "assistant", "you", "are", "helpful",
)


class InstructionTokenizer:
    """Lower-cases, splits on whitespace and punctuation, maps words to ids; unknown words -> <unk>."""

    def __init__(self, words: Sequence[str] = TEXT_WORDS) -> None:
        self.vocab: tuple[str, ...] = TEXT_SPECIALS + tuple(words)
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("instruction vocabulary has duplicate entries")
        self._ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self._ids[s] for s in TEXT_SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._ids.get(w, self.unk_id) for w in self.words(text)]
        return [self.bos_id, *ids, self.eos_id] if add_special_tokens else ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        specials = {self.pad_id, self.bos_id, self.eos_id} if skip_special_tokens else set()
        return " ".join(self.vocab[i] for i in ids if i not in specials)

    def batch_encode(self, texts: Sequence[str], max_length: int | None = None,
                     add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (B,T) long ids and (B,T) bool mask; sequences longer than max_length are cut
        (keeping <eos> last when special tokens are added)."""
        seqs = [self.encode(t, add_special_tokens) for t in texts]
        if max_length is not None:
            seqs = [s if len(s) <= max_length else
                    (s[:max_length - 1] + [self.eos_id] if add_special_tokens else s[:max_length])
                    for s in seqs]
        width = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):  # per-string loop: tokenisation is host-side preprocessing
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        return ids, ids != self.pad_id
