"""`config.toml`: the user's settings, read with tomllib, written once as a commented default.

Home never rewrites the file after creating it (comments and order are the user's), so settings the
app changes at run time live elsewhere (the manifest, preferences/). Errors name the file, the line
when TOML reports one, and the field.
"""

from __future__ import annotations

import getpass
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError
from .fsio import atomic_write_text
from .layout import Vault

USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # as vault.preferences and vault.gestalts check it
DEFAULT_KEYS = {
    "quit": "ctrl+q",
    "new_chat": "ctrl+n",
    "retrain": "ctrl+t",
    "palette": "ctrl+p",
    "cancel": "escape",
    "pick_best": "ctrl+b",
    "search": "ctrl+f",
    "copy": "ctrl+y",
    "memory": "ctrl+o",
}


@dataclass(frozen=True)
class GenerationDefaults:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    seed: int = -1


@dataclass(frozen=True)
class ContextSettings:
    n_ctx: int = 4096
    n_threads: int = 0  # 0: llama.cpp picks
    gpu_layers: int = -1  # -1: all when llama.cpp was built with GPU offload (else none); 0: CPU only


@dataclass(frozen=True)
class MemorySettings:
    enabled: bool = True
    k: int = 5  # memory items offered to the model per turn, at most
    budget_tokens: int = 300  # the memory block's share of the prompt
    embedder: str = ""  # "" = the bundled all-MiniLM-L6-v2; a sentence-transformers folder; or a .gguf (llama.cpp)
    rewrite: bool = False  # the chat model also writes a search query (home/query_rewrite.py): a model call per turn
    summaries: bool = False  # one extractive summary item per ended session (vault/session_summary.py)


@dataclass(frozen=True)
class GestaltSettings:
    """[gestalts]: when the app distils durable facts about the user from the conversation (home/distil.py)."""

    enabled: bool = True
    every_n_turns: int = 10  # also distil every N user turns during a session; 0: only when a session ends


@dataclass(frozen=True)
class TrainingSettings:
    """[training]: when the app offers to retrain (home/app/retrain.py)."""

    learn_from_picks_after: int = 20  # new pick-best pairs before the retrain panel offers "learn from your picks"; 0: never


@dataclass(frozen=True)
class RouterSettings:
    """[router]: the per-turn adapter choice (home/router). Labels need example sentences: the built-in
    ones cover the defaults; `task_examples` / `tone_examples` add labels or extend them."""

    enabled: bool = True
    tasks: tuple[str, ...] = ("chat", "writing", "coding", "planning", "advice")
    tones: tuple[str, ...] = ("neutral", "upbeat", "stressed", "sad", "angry")
    min_confidence: float = 0.25  # an adapter serving a label fits when the classifier gives it this much
    max_adapters: int = 3
    voice_tasks: tuple[str, ...] = ("writing",)  # what a voice adapter that declares no tasks serves
    drift_threshold: float = 0.2  # `home drift`: loss rise (nats) over the training-time loss that flags drift
    task_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tone_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)


BACKEND_KINDS = ("auto", "llama-server", "vllm")


@dataclass(frozen=True)
class BackendSettings:
    """[backend]: where replies come from. `url` "" = the model runs inside Home; "http://HOST:PORT" = a
    llama-server (`home serve` starts one) or a vLLM server (llm/servers). `home --backend URL` overrides."""

    url: str = ""
    api_key: str = ""  # the server's --api-key; $HOME_API_KEY overrides
    timeout: float = 600.0  # seconds a request may wait for the server's next word
    kind: str = "auto"  # "auto" (vLLM when /v1/models says owned_by "vllm", else llama-server), "llama-server", "vllm"


@dataclass(frozen=True)
class Config:
    user: str = "me"
    model: str = ""  # "" = the built-in SmolLM2-135M-Instruct
    persona: str = ""  # "" = no persona: the base model's own manner
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    context: ContextSettings = field(default_factory=ContextSettings)
    keys: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    memory: MemorySettings = field(default_factory=MemorySettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    gestalts: GestaltSettings = field(default_factory=GestaltSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)


def _default_user() -> str:
    try:
        name = re.sub(r"[^A-Za-z0-9_.-]", "", getpass.getuser()).lstrip(".-")[:64]
    except Exception:  # no login name in some containers
        name = ""
    return name or "me"


def default_text(user: str) -> str:
    g, c, m, r, gst = GenerationDefaults(), ContextSettings(), MemorySettings(), RouterSettings(), GestaltSettings()
    keys = "\n".join(f'{k} = "{v}"' for k, v in DEFAULT_KEYS.items())
    return f"""\
# Home settings. Edit freely: Home reads this file and never rewrites it.

# Who is talking (logs and your voice adapter are kept per user). `--user NAME` overrides.
user = "{user}"

# The GGUF model: "" for the built-in SmolLM2-135M-Instruct, a path to a .gguf file,
# or a Hugging Face reference "owner/repo/file.gguf" (downloaded once, when online).
model = ""

# The persona to start with ("" = none). See `home personas list`.
persona = ""

[generation]
temperature = {g.temperature}
top_p = {g.top_p}
top_k = {g.top_k}
repeat_penalty = {g.repeat_penalty}
max_tokens = {g.max_tokens}
seed = {g.seed}           # -1: a fresh random seed per reply

[context]
n_ctx = {c.n_ctx}         # tokens of context; older turns are dropped whole, in steps (the cached prefix holds), when a chat outgrows it
n_threads = {c.n_threads}       # 0: let llama.cpp choose
gpu_layers = {c.gpu_layers}     # model layers on the GPU: -1 all (when llama.cpp has GPU offload), 0 none (CPU),
                      # N fewer when the model does not fit in VRAM; `home --gpu-layers N` overrides, `home doctor` shows

[memory]
enabled = {str(m.enabled).lower()}      # recall earlier conversations in replies (`home memory …`)
k = {m.k}                 # memory items offered per turn, at most
budget_tokens = {m.budget_tokens}   # prompt tokens the memory block may use
embedder = ""         # "" = bundled all-MiniLM-L6-v2, a sentence-transformers folder, or an embedding .gguf
                      # (llama.cpp); after a change: home memory reindex --rebuild
rewrite = {str(m.rewrite).lower()}     # the chat model also rewrites each question into a search query: helps with a
                      # 3-8B model, not with the built-in 135M one; a model call (hundreds of ms) per turn
summaries = {str(m.summaries).lower()}   # also remember each ended chat as one summary of what you said about yourself
                      # (no model; finds more, but ranks some single facts lower: off by default)

[gestalts]
enabled = {str(gst.enabled).lower()}      # distil lasting facts about you into <vault>/gestalts/<user>/ (`home gestalts …`)
every_n_turns = {gst.every_n_turns}   # also every N of your turns, not only when a session ends (0: only then)

[training]
learn_from_picks_after = {TrainingSettings().learn_from_picks_after}  # new pick-best choices before the app offers "learn from your picks" (0: never)

[router]
enabled = {str(r.enabled).lower()}      # pick adapters per turn by user, persona, task and tone (`home route TEXT` says why)
tasks = {_toml_list(r.tasks)}
tones = {_toml_list(r.tones)}
min_confidence = {r.min_confidence}  # an adapter serving a task/tone fits when the message is that label this likely
max_adapters = {r.max_adapters}
voice_tasks = {_toml_list(r.voice_tasks)}   # what your voice adapter serves when it declares no tasks
drift_threshold = {r.drift_threshold}  # `home drift`: flag a loss this much (nats) above the training-time loss
# New labels need example sentences, e.g. after adding "cooking" to tasks:
# [router.task_examples]
# cooking = ["what can I make with leeks and potatoes?", "how long do I roast a chicken?"]

[backend]
url = ""              # "" = the model runs inside Home; "http://HOST:PORT" = a llama-server (`home serve`)
api_key = ""          # the server's --api-key ($HOME_API_KEY overrides)
timeout = {BackendSettings().timeout}       # seconds to wait for the server's next word
kind = "auto"         # "auto" (asks the server), "llama-server" or "vllm"

[keys]
{keys}
"""


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def _show(value: Any) -> str:
    """A value in a message, clipped: a wrong value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _typed(where: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
        return value
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        want = {float: "a number", int: "a whole number", str: "a string"}[kind]
        raise ConfigError(f"{where}: expected {want}, got {_show(value)}")
    return value


def _section(path: str, data: dict, name: str, cls: type) -> Any:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {name}: expected a table [{name}], got {_show(raw)}")
    defaults = cls()
    known = [f.name for f in fields(cls)]
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}: {name}.{key[:40]}: unknown setting (known: {', '.join(known)})")
    # Each setting takes the type of its default (a float default accepts a whole number too).
    return cls(**{k: _typed(f"{path}: {name}.{k}", v, type(getattr(defaults, k))) for k, v in raw.items()})


def _strings(where: str, value: Any) -> tuple[str, ...]:
    """A list of distinct non-empty strings (labels, example sentences)."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of strings, got {_show(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where}[{i}]: expected a non-empty string, got {_show(item)}")
        if item in value[:i]:
            raise ConfigError(f"{where}[{i}]: {_show(item)} is listed twice")
    return tuple(item.strip() for item in value)


def _router_section(path: str, data: dict) -> RouterSettings:
    raw = data.get("router", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: router: expected a table [router], got {_show(raw)}")
    defaults, values = RouterSettings(), {}
    known = [f.name for f in fields(RouterSettings)]
    for key, value in raw.items():
        where = f"{path}: router.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(known)})")
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            values[key] = _strings(where, value)
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table [router.{key}], got {_show(value)}")
            values[key] = {label: _strings(f"{where}.{label}", v) for label, v in value.items()}
        else:
            values[key] = _typed(where, value, type(default))
    r = RouterSettings(**values)
    for key in ("tasks", "tones"):
        if not getattr(r, key):
            raise ConfigError(f"{path}: router.{key}: needs at least one label")
    if not 0 <= r.min_confidence <= 1:
        raise ConfigError(f"{path}: router.min_confidence: expected 0 to 1, got {r.min_confidence}")
    if r.max_adapters < 0:
        raise ConfigError(f"{path}: router.max_adapters: expected >= 0, got {r.max_adapters}")
    if r.drift_threshold <= 0:
        raise ConfigError(f"{path}: router.drift_threshold: expected > 0, got {r.drift_threshold}")
    return r


def parse_config(text: str, path: str = "config.toml") -> Config:
    """A Config from TOML text; `ConfigError` naming the file, line and field on anything wrong."""
    try:
        return _parse(text, path)
    except ConfigError as exc:
        raise _with_line(exc, text, path) from None


def _with_line(exc: ConfigError, text: str, path: str) -> ConfigError:
    """tomllib gives no positions for values, so find the field's line ourselves (best effort)."""
    message = str(exc)
    field_name = message.removeprefix(f"{path}: ").split(": ", 1)[0]
    if not message.startswith(f"{path}: ") or " " in field_name or "(line " in message:
        return exc
    section, _, key = re.sub(r"\[\d+\]$", "", field_name).rpartition(".")
    current = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]", line)
        if header:
            current = header.group(1)
        elif current == section and line.partition("=")[0].strip().strip('"') == key and "=" in line:
            return ConfigError(f"{message} (line {n})")
    return exc


def _parse(text: str, path: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply to read") from None
    except ValueError as exc:  # tomllib lets Python's 4300-digit integer limit through
        why = "a number longer than 4300 digits" if "digits" in str(exc) else str(exc).split(":")[0]
        raise ConfigError(f"{path}: invalid TOML: {why}") from None
    allowed = {"user", "model", "persona", "generation", "context", "keys", "memory", "router", "gestalts", "backend",
               "training"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{path}: {key}: unknown setting (known: {', '.join(sorted(allowed))})")
    top = {k: _typed(f"{path}: {k}", data[k], str) for k in ("user", "model", "persona") if k in data}
    if "user" in top and not top["user"].strip():
        raise ConfigError(f"{path}: user: must not be empty")
    if "user" in top and not USER_NAME.fullmatch(top["user"]):  # a folder and file name in the vault
        raise ConfigError(f"{path}: user: expected 1-64 letters, digits, '_', '.' or '-' (not starting with "
                          f"'.' or '-'), got {_show(top['user'])}")
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise ConfigError(f"{path}: keys: expected a table [keys], got {_show(keys)}")
    keymap = dict(DEFAULT_KEYS)
    for k in keys:
        if k not in DEFAULT_KEYS:
            raise ConfigError(f"{path}: keys.{k[:40]}: unknown action (known: {', '.join(DEFAULT_KEYS)})")
    keymap.update({k: _typed(f"{path}: keys.{k}", v, str) for k, v in keys.items()})
    gen = _section(path, data, "generation", GenerationDefaults)
    ctx = _section(path, data, "context", ContextSettings)
    mem = _section(path, data, "memory", MemorySettings)
    router = _router_section(path, data)
    gestalts = _section(path, data, "gestalts", GestaltSettings)
    training = _section(path, data, "training", TrainingSettings)
    if training.learn_from_picks_after < 0:
        raise ConfigError(f"{path}: training.learn_from_picks_after: expected >= 0, got {training.learn_from_picks_after}")
    backend = _section(path, data, "backend", BackendSettings)
    if backend.url and not re.match(r"^https?://[^/\s]+", backend.url):
        raise ConfigError(f"{path}: backend.url: expected http://HOST:PORT or \"\", got {backend.url!r}")
    if backend.timeout <= 0:
        raise ConfigError(f"{path}: backend.timeout: expected a number of seconds > 0, got {backend.timeout}")
    if backend.kind not in BACKEND_KINDS:
        raise ConfigError(f"{path}: backend.kind: expected one of {', '.join(BACKEND_KINDS)}, got {_show(backend.kind)}")
    if gestalts.every_n_turns < 0:
        raise ConfigError(f"{path}: gestalts.every_n_turns: expected >= 0, got {gestalts.every_n_turns}")
    if mem.k < 0 or mem.budget_tokens < 0:
        raise ConfigError(f"{path}: memory: k and budget_tokens must be >= 0")
    if gen.max_tokens < 1:
        raise ConfigError(f"{path}: generation.max_tokens: expected at least 1, got {gen.max_tokens}")
    if gen.temperature < 0:
        raise ConfigError(f"{path}: generation.temperature: expected >= 0, got {gen.temperature}")
    for name, ok, want in (("top_p", 0 <= gen.top_p <= 1, "between 0 and 1"), ("top_k", gen.top_k >= 0, ">= 0"),
                           ("repeat_penalty", gen.repeat_penalty > 0, "> 0")):  # a persona card's rules
        if not ok:
            raise ConfigError(f"{path}: generation.{name}: expected {want}, got {getattr(gen, name)}")
    if ctx.n_ctx < 256:
        raise ConfigError(f"{path}: context.n_ctx: expected at least 256, got {ctx.n_ctx}")
    if ctx.gpu_layers < -1:
        raise ConfigError(f"{path}: context.gpu_layers: expected -1 (all) or a number of layers >= 0, got {ctx.gpu_layers}")
    return Config(generation=gen, context=ctx, keys=keymap, memory=mem, router=router, gestalts=gestalts, training=training,
                  backend=backend, **top)


def load_config(vault: Vault) -> Config:
    """The vault's config; the first call writes a commented default (0600)."""
    path = vault.config_path
    if not path.exists():
        atomic_write_text(path, default_text(_default_user()))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    return parse_config(text, str(path))
