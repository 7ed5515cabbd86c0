"""What packing short turns would save a CPU voice run (issue 16's "packing" sweep row): the share of
padding in the trainer's length-grouped batches of a voice dataset, as the trainer batches it.

On a GPU with flash attention the trainer already packs (padding-free batches, trainer/worker/train.py);
on the CPU it batches by length (trainer/worker/dataset.py LengthGroupedSampler), and packing could at
most save the padding this prints. Packing at a fixed steps × tokens budget shows each step the same
examples' tokens, so it is a speed lever, not a fidelity one.

    .venv/bin/python bench/voice_padding.py /tmp/vs4/lr-1e-3/data/hamlet.jsonl [--val-fraction 0.1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import model_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", type=Path, help="voice datasets (jsonl, as bench/voice_sweep.py writes)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the latest share held out (default 0.1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--model", type=Path, default=None, help="the GGUF (default: Home's built-in model)")
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    from trainer.data.sources import load_source
    from trainer.worker.base_cache import dequantized_base
    from trainer.worker.dataset import LengthGroupedSampler, split_examples, tokenize

    tokenizer = AutoTokenizer.from_pretrained(dequantized_base(model_path(args.model), "float32"))
    print(f"{'dataset':<24}{'trained':>8}{'mean tokens':>12}{'tokens/step':>12}{'padding':>9}")
    for path in args.datasets:
        examples = load_source("jsonl", path).examples
        train, _ = split_examples(examples, args.val_fraction, by_time=True)
        lengths = [len(r["input_ids"]) for r in tokenize(train, tokenizer, args.max_length)]
        batches = LengthGroupedSampler(lengths, args.batch_size, seed=0).batches()
        real = sum(lengths)
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        print(f"{path.stem:<24}{len(lengths):>8}{real / len(lengths):>12.0f}{real / len(batches):>12.0f}"
              f"{1 - real / padded:>9.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
