"""Examples → what the trainer consumes: a seeded train/validation split, token ids with completion-only
labels, and a length-grouped sampler.

Why tokenize here rather than let trl do it: the labels are the whole point of a voice adapter (loss on
the target and its end-of-turn only, never on the prompt), so they are built in one readable function a
test can check token by token; over-long examples lose their *oldest context*, not their target (trl's
truncation keeps the start and would cut the very text being learned); and pre-tokenized records let
the same data run padded or padding-free.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from trainer.data.examples import MIN_EXAMPLES, Example

IGNORE = -100  # the label torch's cross-entropy skips


class DataError(ValueError):
    """The examples cannot make a training run (too few to hold any out, nothing left to learn)."""

    exit_code = 2


def split_examples(examples: Sequence[Example], val_fraction: float = 0.1, seed: int = 0,
                   min_val: int = 2, by_time: bool = False) -> tuple[list[Example], list[Example]]:
    """Hold out `val_fraction` (at least `min_val`, at most a third) for validation: a seeded shuffle's
    share, or with `by_time` the *last* examples in source order (logs and transcripts are in time order).

    A voice adapter is used on words its user has not written yet, so it is judged (and early-stopped)
    on their later words: a random split scores it on sentences between ones it trained on, which flatters it.
    Deterministic for a given seed and input order. The validation set is never empty: early stopping and
    the "adapter beats the base" check both read it.
    """
    n = len(examples)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction: expected a number between 0 and 1, got {val_fraction}")
    if n < max(MIN_EXAMPLES, min_val + 2):
        raise DataError(
            f"only {n} example{'s' if n != 1 else ''}: at least {max(MIN_EXAMPLES, min_val + 2)} are needed to "
            "train on some and hold some out for validation; add more data"
        )
    n_val = max(min_val, math.ceil(n * val_fraction), 1)
    n_val = min(n_val, max(1, n // 3))  # keep at least two thirds for training
    order = list(range(n))
    if by_time:
        order.reverse()
    else:
        random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    train = [ex for i, ex in enumerate(examples) if i not in val_idx]
    val = [ex for i, ex in enumerate(examples) if i in val_idx]
    return train, val


def _ids(tokenizer: Any, text: str) -> list[int]:
    # The chat template already wrote every special token, so none are added here.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_example(example: Example, tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """One example as `input_ids` + `labels`, labels = IGNORE on every prompt token.

    The prompt is the chat template with the generation prompt (`<|im_start|>assistant\\n` for ChatML);
    the target is what the full conversation adds after it: the reply and the end-of-turn marker, which
    the model must learn so it stops where the voice stops. When the two renderings disagree on a
    boundary token, the completion starts where they diverge (as trl does). Too long: the prompt loses
    its oldest tokens first, keeping at least a quarter of `max_length`; the target is cut only if it
    alone is longer than the rest.
    """
    messages = example.prompt_messages()
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": example.target}], tokenize=False
    )
    prompt_ids, full_ids = _ids(tokenizer, prompt_text), _ids(tokenizer, full_text)
    cut = _common_prefix(prompt_ids, full_ids)
    prompt, completion = full_ids[:cut], full_ids[cut:]
    if len(prompt) + len(completion) > max_length:
        keep_prompt = min(len(prompt), max(max_length - len(completion), max_length // 4))
        prompt = prompt[len(prompt) - keep_prompt:]
        completion = completion[: max_length - keep_prompt]
    return {"input_ids": prompt + completion, "labels": [IGNORE] * len(prompt) + completion}


def tokenize(examples: Sequence[Example], tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Tokenize every example (see `tokenize_example`); an example with no target token left is an error,
    since it would train on nothing and hide a data problem."""
    records = []
    for ex in examples:
        rec = tokenize_example(ex, tokenizer, max_length)
        if all(label == IGNORE for label in rec["labels"]):
            raise DataError(f"{ex.origin}: the target is empty after tokenizing (max_length {max_length})")
        records.append(rec)
    return records


def count_target_tokens(records: Sequence[dict]) -> int:
    return sum(sum(1 for label in r["labels"] if label != IGNORE) for r in records)


class LengthGroupedSampler(Sampler[int]):
    """Yields indices so that each run of `batch_size` has similar lengths: little padding, little waste.

    Shuffle (seeded by `seed` and the epoch), cut into mega-batches of `group` batches, sort each by
    length, then shuffle the order of the batches, keeping the longest batch first so a batch that does
    not fit in memory fails on step one rather than an hour in. The order depends only on (seed, epoch),
    never on global RNG state, so a resumed run sees exactly the batches the interrupted one would have.
    transformers calls `set_epoch` at each epoch start.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.group
        batches: list[list[int]] = []
        for start in range(0, len(order), size):
            mega = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            batches.extend(mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size))
        if len(batches) > 1:
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
            first = batches.pop(longest)
            rest = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
            batches = [first, *rest]
        # A short batch may only come last, or the DataLoader would re-chunk the ones after it.
        short = [b for b in batches if len(b) < self.batch_size]
        return [b for b in batches if len(b) == self.batch_size] + short

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch


def padding_waste(records: Sequence[dict], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of the padded token grid that is padding, for a given batching (0 = none wasted)."""
    grid = sum(len(b) * max(len(records[i]["input_ids"]) for i in b) for b in batches if b)
    real = sum(len(records[i]["input_ids"]) for b in batches for i in b)
    return 1.0 - real / grid if grid else 0.0
