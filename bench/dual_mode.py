"""Dual mode measured (issue 14 item 2): 40 fixed prompts, half tasks with a checkable answer, half chit-chat;
per configuration the task answers' correctness and the persona's style markers, in one report.

Configurations, same greedy decoding: the base model (no persona), then the persona with the mode the router
picks per prompt (auto), pinned focused, pinned character. Style markers: the share of reply words from the
persona card's own vocabulary (its description, personality, system prompt, example dialogue; stopwords out)
and exclamation marks per reply, each also as a ratio to the base model's. `--adapter FILE.gguf` stacks a
persona adapter (scaled by the mode's factor); without one only the mode's prompt line differs.

    .venv/bin/python bench/dual_mode.py [--persona spark] [--adapter x.gguf] [--max-tokens 48] [--out r.json]
"""

from __future__ import annotations

import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import _common

TASKS = [  # (prompt, accepted answers: any one, case-insensitive, as a whole word)
    ("What is 7 times 8?", ["56"]), ("What is 15 plus 27?", ["42"]), ("What is 100 minus 37?", ["63"]),
    ("What is the capital of France?", ["paris"]), ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Italy?", ["rome"]), ("How many days are in a week?", ["7", "seven"]),
    ("How many legs does a spider have?", ["8", "eight"]), ("What colour do you get by mixing blue and yellow?",
                                                             ["green"]),
    ("What is the boiling point of water in Celsius?", ["100"]), ("What is 9 squared?", ["81"]),
    ("How many minutes are in an hour?", ["60", "sixty"]), ("What planet do we live on?", ["earth"]),
    ("What is the largest ocean on Earth?", ["pacific"]), ("How many months are in a year?", ["12", "twelve"]),
    ("What is the chemical symbol for water?", ["h2o"]), ("What is half of 50?", ["25"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("Write a Python expression that gives the length of a list called items.", ["len(items)"]),
    ("What is 12 divided by 4?", ["3", "three"]),
]
CHATS = [
    "hey, how was your day?", "what's your favourite season and why?", "I just got back from a walk, it was lovely",
    "do you like rainy days?", "tell me something that made you smile lately", "good morning! how are you feeling?",
    "I'm bored, talk to me", "what do you think about cats?", "I had pancakes for breakfast",
    "do you ever get tired?", "what kind of music do you like?", "it's finally the weekend!",
    "I can't decide whether to nap or read", "how's life treating you?", "what would you do on a sunny afternoon?",
    "I miss the summer already", "tell me about yourself", "do you prefer mornings or evenings?",
    "my cat just knocked over a plant", "what's the best thing about today?",
]
STOP = set("""a an the and or but if of to in on at for with from by as is are was were be been it its this that
these those i you he she we they me my your our their his her them us do does did not no yes so too very can will
just than then there here what when where who why how all any some more most such only own same into about over
let's let s t up out""".split())
WORD = re.compile(r"[a-z']+")


def vocabulary(persona) -> set[str]:
    from home.prompt import fill

    text = " ".join(fill(persona.data.get(k) or "", "", "") for k in ("description", "personality",
                                                                      "system_prompt", "mes_example"))
    return {w for w in WORD.findall(text.lower()) if w not in STOP and len(w) > 2}


def correct(reply: str, answers: list[str]) -> bool:
    low = reply.lower()
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?![\w])", low) for a in answers)


def markers(replies: list[str], vocab: set[str]) -> tuple[float, float]:
    words = [w for r in replies for w in WORD.findall(r.lower())]
    rate = 100.0 * sum(w in vocab for w in words) / max(len(words), 1)
    return rate, sum(r.count("!") for r in replies) / max(len(replies), 1)


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0], iters=1)
    p.add_argument("--persona", default="spark", help="a built-in or vault persona (default spark)")
    p.add_argument("--adapter", type=Path, default=None, help="a persona adapter GGUF for the model")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks and N chats (a smoke run)")
    p.add_argument("--out", type=Path, default=None, help="also write the report (and every reply) as JSON")
    args = p.parse_args()

    from home.prompt import build_messages, prompt_budget
    from home.router import Router
    from home.router.mode import apply_mode, choose_mode, mode_message
    from llm.engine import Engine
    from llm.params import GenParams
    from vault.config import parse_config
    from vault.layout import Vault
    from vault.personas import get_persona

    started = time.perf_counter()
    tasks_list, chats_list = TASKS[:args.limit], CHATS[:args.limit]
    vault = Vault.open(Path(tempfile.mkdtemp(prefix="dual-mode-")) / "v")
    persona = get_persona(vault, args.persona)
    router = Router.load(vault, parse_config(""))
    engine = Engine(_common.model_path(args.model), n_ctx=args.n_ctx, n_threads=args.threads)
    stack = []
    if args.adapter is not None:
        engine.load_adapter("persona", args.adapter)
        stack = [("persona", 1.0)]
    params = GenParams(temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.1, seed=1, max_tokens=args.max_tokens)
    prompts = [(t, a) for t, a in tasks_list] + [(c, None) for c in chats_list]
    tasks = {text: router.classify(text)[0] for text, _ in prompts}
    vocab = vocabulary(persona)

    def reply(text: str, who, pin: str | None) -> tuple[str, str]:
        task = tasks[text]
        mode = choose_mode(who, task.label, task.confidence, pin if who is not None else "auto", "me", text)
        turn, mode = apply_mode(mode, stack if who is not None else [], {"persona"})
        messages = build_messages(who, [], text, "me", None, prompt_budget(engine))
        line = mode_message(mode) if who is not None else None
        if line:
            messages.insert(len(messages) - 1, line)
        return "".join(engine.stream(messages, params, adapters=turn)).strip(), mode.name

    configs = [("base model", None, None), ("persona auto", persona, "auto"),
               ("persona focused", persona, "focused"), ("persona character", persona, "character")]
    results = {}
    for n, (name, who, pin) in enumerate(configs, 1):
        rows = []
        for i, (text, answers) in enumerate(prompts, 1):
            out, mode = reply(text, who, pin)
            rows.append({"prompt": text, "reply": out, "mode": mode, "task": tasks[text].label,
                         "correct": correct(out, answers) if answers else None})
            print(f"\r[{n}/{len(configs)}] {name}: {i}/{len(prompts)}", end="", file=sys.stderr, flush=True)
        results[name] = rows
    print(file=sys.stderr)

    TASKS[:], CHATS[:] = tasks_list, chats_list  # the report covers what ran
    auto = {r["prompt"]: r["mode"] for r in results["persona auto"]}
    picked_focused = sum(auto[t] == "focused" for t, _ in TASKS)
    picked_character = sum(auto[c] == "character" for c in CHATS)
    base_task = markers([r["reply"] for r in results["base model"][:len(TASKS)]], vocab)
    base_chat = markers([r["reply"] for r in results["base model"][len(TASKS):]], vocab)
    print(f"persona {persona.id}; {len(TASKS)} tasks + {len(CHATS)} chit-chat; greedy, max {args.max_tokens} tokens; "
          f"adapter {'none' if args.adapter is None else args.adapter}")
    print(f"router: tasks → focused {picked_focused}/{len(TASKS)}, chit-chat → character "
          f"{picked_character}/{len(CHATS)}")
    print(f"{'configuration':<20}{'task correct':>13}{'task vocab%':>12}{'(x base)':>9}{'chat vocab%':>12}"
          f"{'(x base)':>9}{'chat !/reply':>13}{'(x base)':>9}")
    report = {}
    for name, rows in results.items():
        task_rows, chat_rows = rows[:len(TASKS)], rows[len(TASKS):]
        acc = sum(r["correct"] for r in task_rows) / len(task_rows)
        tv, _ = markers([r["reply"] for r in task_rows], vocab)
        cv, ce = markers([r["reply"] for r in chat_rows], vocab)
        ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
        print(f"{name:<20}{acc:>13.2f}{tv:>12.2f}{ratio(tv, base_task[0]):>9.2f}{cv:>12.2f}"
              f"{ratio(cv, base_chat[0]):>9.2f}{ce:>13.2f}{ratio(ce, base_chat[1]):>9.2f}")
        report[name] = {"task_accuracy": acc, "task_vocab_pct": tv, "chat_vocab_pct": cv, "chat_exclaims": ce}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - started:.0f} s, peak RSS {peak:.0f} MiB")
    if args.out is not None:
        args.out.write_text(json.dumps({"report": report, "replies": results}, ensure_ascii=False, indent=1))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
