"""Synthetic in-character datasets: per persona, scenario prompts answered in character (by the local
model or an OpenAI-compatible endpoint), filtered, de-duplicated, and written as JSONL persona records.

Torch-free: `home data synth` imports it. Modules: `tiers` (how many examples per persona), `prompts`
(scenario prompts and the in-character context), `filters` (what gets dropped and why), `local` and
`openai_client` (the two generators, one call shape), `run` (the resumable loop and the output files).
"""


class SynthError(ValueError):
    """Bad input to synthesis (tiers file, persona list, output folder); one line naming file and field."""

    exit_code = 2


class EndpointError(RuntimeError):
    """The OpenAI-compatible endpoint failed; the message names the URL and the HTTP status or reason."""

    exit_code = 1
