"""Keyword names that moved between transformers releases. The trainer runs under whatever transformers a
GPU machine's image holds, not only the one pinned here: 5.17 knows only `gradient_checkpointing`, 5.24
adds `activation_checkpointing` (and keeps the old name), and a config built with the other release's
name fails at its first line (seen on an H200 image: `SFTConfig.__init__() got an unexpected keyword
argument 'activation_checkpointing'`)."""

from __future__ import annotations

from collections.abc import Collection


def checkpointing_kwargs(on: bool, fields: Collection[str] | None = None) -> dict:
    """TrainingArguments' activation-checkpointing switch and its kwargs, under the installed name."""
    if fields is None:
        from transformers import TrainingArguments

        fields = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}
