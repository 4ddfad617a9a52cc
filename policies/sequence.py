"""The VLA's token sequence as the official code builds it (2VA: vision-action pairs, past actions interleaved) -> padded tensors.

drivevla_w0_paper.md §2.2, one row:

    <bos>  text_1 [<boi> <img> frame_1 codes <eof> <eoi>] past_1  <boa> action_1 <eoa>
           text_2 [<boi> <img> frame_2 codes <eof> <eoi>] past_2  <boa> plan <eoa>

text: the command's words; past: FAST tokens of the motions before the frame (no loss); action_f: FAST tokens of
the motion from frame f to the next one; plan: FAST tokens of the trajectory to drive. Labels (`labels`, -100
elsewhere) are every image code (the world model: frame 1 from the prompt alone, frame 2 from frame 1 and the
action between them) and every <boa> ... <eoa> span. No ego speed or acceleration is given: the past motions are
the only ego state, as in the official code. The official image block also holds its shape as text ("1*18*32")
after <boi>; the word vocabulary here has no digits, so the block is <boi> <img> codes <eof> <eoi>.

Variants: a decoding prompt ends with the last frame's <boa> (no plan); a world-model context ends with
`<boi> <img>` of the next frame after the plan's <eoa> (the codes to sample come next). Rows differ in length
(FAST and text lengths vary) and are LEFT-padded, so every row's last token is the decoding position; position
ids count real tokens only.

The Qwen2.5-VL track (`ChatSequenceBuilder`) holds the same content in Qwen's chat template, as the official
`data_qwen_vla.py` builds it: a system turn ("you are a helpful assistant"), then per frame a user turn
`<|vision_start|> <|image_pad|> x n <|vision_end|> text past` and an assistant turn `<boa> action <eoa>`, each turn
`<|im_start|> role ... <|im_end|>`. Only the <boa> ... <eoa> spans are labelled (the world model is the diffusion
head). The template's newlines are left out: the word vocabulary has none.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch

from policies.config import DriveVLAW0Config
from policies.text import InstructionTokenizer

IGNORE = -100  # label of a position without loss (PyTorch's cross-entropy ignore_index)


class TokenType(IntEnum):
    """Per-token role."""

    PAD = 0
    TEXT = 1
    IMAGE = 2  # an image code (Emu3 track) or an <|image_pad|> placeholder of a ViT feature (Qwen track)
    PAST_ACTION = 3
    ACTION = 4  # FAST tokens between <boa> and <eoa>
    MARKER = 5  # <bos> <boi> <img> <eof> <eoi> <boa> <eoa>


@dataclass
class VLASequence:
    """A batch of left-padded rows (B,L) and where things are in each row.

    image_index: (B,F,h*w) positions of each frame's codes; context_mask: (B,L) the real tokens before the last
    <boa> (what the action expert reads); plan_mask: (B,L) the plan's FAST tokens (False without a plan);
    labels: (B,L) targets (IGNORE where none), None for a prompt."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    type_ids: torch.Tensor
    image_index: torch.Tensor
    context_mask: torch.Tensor
    plan_mask: torch.Tensor
    labels: torch.Tensor | None = None

    def image_positions(self, frame: int = -1) -> torch.Tensor:
        """(B,h*w) positions of frame `frame`'s codes (default: the current frame)."""
        return self.image_index[:, frame]


def check_segments(c: DriveVLAW0Config, frames: int, actions: int) -> None:
    """A ValueError unless a sequence of `frames` frames with `actions` action segments is one a builder makes:
    1 to num_history_frames frames; one segment fewer (a prompt) or as many (with the plan)."""
    if not 1 <= frames <= c.num_history_frames:
        raise ValueError(f"{frames} frames of past actions; config.num_history_frames is {c.num_history_frames}")
    if actions not in (frames - 1, frames):
        raise ValueError(f"{actions} action segments for {frames} frames: give {frames - 1} (a prompt) "
                         f"or {frames} (with the plan)")


class SequenceBuilder:
    """Builds `VLASequence` batches from tokenised parts (module docstring)."""

    def __init__(self, config: DriveVLAW0Config) -> None:
        self.config = config
        self.ids = {name: config.special_id(name) for name in ("<bos>", "<boi>", "<img>", "<eof>", "<eoi>",
                                                                   "<boa>", "<eoa>")}

    def build(self, texts: list[list[int]], codes: torch.Tensor, past: list[list[list[int]]],
              actions: list[list[list[int]]], open_image: bool = False, with_labels: bool = False) -> VLASequence:
        """texts: per row, the command's word ids (local ids of `InstructionTokenizer`, shared by the frames);
        codes: (B,F,h,w) image codes, oldest first; F is at most
        num_history_frames (a world-model context may hold the last frame only, as the first pair of training);
        past: per frame, per row, FAST ids of its past motions; actions: per frame, per row, FAST ids of its action
        (F-1 entries: a decoding prompt ending in <boa>; F entries: the last is the plan); open_image: after the
        plan, open the next frame (world-model context); with_labels: set `labels` (training)."""
        c = self.config
        b, frames = len(texts), len(past)
        check_segments(c, frames, len(actions))
        if open_image and len(actions) != frames:
            raise ValueError("a world-model context needs the plan (one action segment per frame)")
        if codes.shape[:2] != (b, frames):
            raise ValueError(f"codes hold {tuple(codes.shape[:2])} (rows, frames); the texts and past actions give "
                             f"{(b, frames)}")
        codes = codes.reshape(b, frames, c.image_tokens_per_frame).cpu() + c.image_offset
        rows = [self._row(r, texts, codes, past, actions, open_image) for r in range(b)]
        return pad_rows(c, rows, with_labels and c.use_world_model, with_labels)

    def _row(self, r: int, texts, codes, past, actions, open_image) -> list[tuple[int, int, bool]]:
        """One row as (id, type, labelled) triples."""
        s = self.ids
        text = [(t, TokenType.TEXT, False) for t in texts[r]]  # word ids are the bottom of the text range
        row = [(s["<bos>"], TokenType.MARKER, False)]
        for f in range(len(past)):
            row += text
            row += [(s["<boi>"], TokenType.MARKER, False), (s["<img>"], TokenType.MARKER, False)]
            row += [(int(k), TokenType.IMAGE, True) for k in codes[r, f]]
            row += [(s["<eof>"], TokenType.MARKER, False), (s["<eoi>"], TokenType.MARKER, False)]
            row += [(k, TokenType.PAST_ACTION, False) for k in past[f][r]]
            row.append((s["<boa>"], TokenType.MARKER, True))
            if f < len(actions):
                row += [(k, TokenType.ACTION, True) for k in actions[f][r]]
                row.append((s["<eoa>"], TokenType.MARKER, True))
        if open_image:
            row += text + [(s["<boi>"], TokenType.MARKER, False), (s["<img>"], TokenType.MARKER, False)]
        return row


class ChatSequenceBuilder:
    """Builds the Qwen track's `VLASequence` batches (module docstring); image tokens are `<|image_pad|>`
    placeholders, which the backbone fills with ViT features."""

    SYSTEM = ("you", "are", "a", "helpful", "assistant")

    def __init__(self, config: DriveVLAW0Config) -> None:
        self.config = config
        words = InstructionTokenizer()
        self.role = {r: words.encode(r, add_special_tokens=False)[0] for r in ("system", "user", "assistant")}
        self.system = words.encode(" ".join(self.SYSTEM), add_special_tokens=False)
        self.ids = {name: config.special_id(name) for name in ("<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                               "<|vision_end|>", "<|image_pad|>", "<boa>", "<eoa>")}

    def build(self, texts: list[list[int]], past: list[list[list[int]]], actions: list[list[list[int]]],
              with_labels: bool = False) -> VLASequence:
        """As `SequenceBuilder.build` without codes (every frame's tokens are placeholders) or world-model contexts."""
        c = self.config
        check_segments(c, len(past), len(actions))
        rows = [self._row(r, texts, past, actions) for r in range(len(texts))]
        return pad_rows(c, rows, False, with_labels)

    def _turn(self, role: str, body: list[tuple[int, int, bool]], close: bool = True) -> list[tuple[int, int, bool]]:
        s = self.ids
        turn = [(s["<|im_start|>"], TokenType.MARKER, False), (self.role[role], TokenType.TEXT, False), *body]
        return turn + [(s["<|im_end|>"], TokenType.MARKER, False)] if close else turn

    def _row(self, r: int, texts, past, actions) -> list[tuple[int, int, bool]]:
        s, n = self.ids, self.config.image_tokens_per_frame
        row = self._turn("system", [(t, TokenType.TEXT, False) for t in self.system])
        for f in range(len(past)):
            image = [(s["<|vision_start|>"], TokenType.MARKER, False)]
            image += [(s["<|image_pad|>"], TokenType.IMAGE, False)] * n
            image.append((s["<|vision_end|>"], TokenType.MARKER, False))
            text = [(t, TokenType.TEXT, False) for t in texts[r]]
            row += self._turn("user", image + text + [(k, TokenType.PAST_ACTION, False) for k in past[f][r]])
            answer = [(s["<boa>"], TokenType.MARKER, True)]
            if f < len(actions):
                answer += [(k, TokenType.ACTION, True) for k in actions[f][r]] + [(s["<eoa>"], TokenType.MARKER, True)]
            row += self._turn("assistant", answer, close=f < len(actions))
        return row


def pad_rows(c: DriveVLAW0Config, rows: list[list[tuple[int, int, bool]]], label_images: bool,
             with_labels: bool) -> VLASequence:
    """Left-pad (id, type, labelled) rows into a `VLASequence`."""
    b = len(rows)
    length = max(len(r) for r in rows)
    ids = torch.full((b, length), c.pad_id, dtype=torch.long)
    types = torch.full((b, length), int(TokenType.PAD), dtype=torch.long)
    labelled = torch.zeros(b, length, dtype=torch.bool)
    for i, row in enumerate(rows):  # host-side assembly: rows differ in length
        start = length - len(row)
        ids[i, start:] = torch.tensor([t[0] for t in row])
        types[i, start:] = torch.tensor([int(t[1]) for t in row])
        labelled[i, start:] = torch.tensor([t[2] for t in row])
    mask = types != int(TokenType.PAD)
    is_boa = ids == c.special_id("<boa>")
    last_boa = length - 1 - is_boa.flip(1).long().argmax(1)  # (B,)
    columns = torch.arange(length)
    context = mask & (columns[None] < last_boa[:, None])
    # The plan: ACTION tokens after the last <boa> (a prompt has none).
    plan = (types == int(TokenType.ACTION)) & (columns[None] > last_boa[:, None])
    image_index = (types == int(TokenType.IMAGE)).nonzero()[:, 1].view(b, -1, c.image_tokens_per_frame)
    labels = None
    if with_labels:
        keep = labelled & ((types != int(TokenType.IMAGE)) | label_images)
        labels = torch.where(keep, ids, torch.full_like(ids, IGNORE))
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    return VLASequence(ids, mask.long(), positions, types, image_index, context, plan, labels)


__all__ = ["IGNORE", "ChatSequenceBuilder", "SequenceBuilder", "TokenType", "VLASequence", "check_segments",
           "pad_rows"]
