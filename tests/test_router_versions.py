"""A name retrained for years: the router routes to its newest version (never an older one by a lower id),
an older version still answers when named, and the decision a turn logs stays the same size however many
versions the manifest keeps."""

from __future__ import annotations

import json

from home.router import Router
from home.stack import StackSpec
from llm.gguf_meta import read_model_info
from llm.models import default_model_path
from tests.loras import make_random_lora
from vault.config import parse_config
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore

CODING = "my python script throws an IndexError when the list is empty"


def _vault(root, voices: int):  # noqa: ANN001, ANN202
    vault = Vault.open(root)
    info = read_model_info(default_model_path())
    make_random_lora(default_model_path(), vault.adapters_dir / "a.gguf", rank=2, n_layers=1)
    base = {"fingerprint": info.fingerprint, "name": info.name}
    with ManifestStore(vault).update() as m:
        for v in (1, 2, 10):  # "coder-10" sorts before "coder-2" as text
            m.add_adapter(AdapterEntry(id=f"coder-{v}", name="coder", file="adapters/a.gguf", base=dict(base),
                                       kind="task", tasks=["coding"], created=f"2026-0{min(v, 9)}-01T00:00:00Z"))
        for v in range(1, voices + 1):
            m.add_adapter(AdapterEntry(id=f"me-voice-{v}", name="me-voice", file="adapters/a.gguf",
                                       base=dict(base), owner="me", kind="voice"))
        m.ensure_user("me")["voice_adapter"] = f"me-voice-{voices}"
    return vault, info


def test_the_newest_version_is_routed_to_and_the_logged_decision_does_not_grow(tmp_path, embedder):
    logged = []
    for voices in (3, 60):
        vault, info = _vault(tmp_path / str(voices), voices)
        router = Router.load(vault, parse_config(""), embedder)
        manifest = ManifestStore(vault).read()
        d = router.decide(manifest, user="me", text=CODING, model_fingerprint=info.fingerprint, model_name=info.name)
        assert [i for i, _ in d.stack] == ["coder-10"], d.reason
        cands = {c.id: c for c in d.candidates}
        assert sorted(cands) == sorted(["coder-10", "coder-2", f"me-voice-{voices - 1}", f"me-voice-{voices}"])
        assert cands["coder-2"].why == "2 older versions (coder-1 … coder-2) of coder (coder-10 is the newest): " \
                                       "used only when named"
        assert not cands["coder-2"].fits and not cands[f"me-voice-{voices - 1}"].fits
        logged.append(len(json.dumps(d.to_dict()["candidates"])))

        named = router.decide(manifest, user="me", text=CODING, explicit=[StackSpec.parse("coder-1")],
                              model_fingerprint=info.fingerprint, model_name=info.name)
        assert named.stack == [("coder-1", 1.0)] and named.explicit
    assert abs(logged[1] - logged[0]) <= 8, logged  # the digits of the count and the ids, nothing per version
