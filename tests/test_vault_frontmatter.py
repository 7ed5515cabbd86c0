"""vault/frontmatter.py: the one header reader of gestalts, sheets and essays: fences, comments, quotes,
line numbers; strict readers refuse what lenient ones skip."""

from __future__ import annotations

import pytest

from vault.frontmatter import FrontMatterError, parse_field, read_front_matter


def test_fields_their_lines_and_the_body():
    text = ("\ufeff---\n# who\nname: \"Wren Alder\"   # quoted, commented\n- **Hotkey**: f5\n\nsaid: 2026-01-05T09:00:00Z\n"
            "---\n# Wren\nBody.\n")
    fm = read_front_matter(text)
    assert [(f.key, f.value, f.line) for f in fm.fields] == [
        ("name", "Wren Alder", 3), ("Hotkey", "f5", 4), ("said", "2026-01-05T09:00:00Z", 6)]
    assert fm.body == "# Wren\nBody.\n" and fm.body_line == 8 and fm.fence == "---"
    assert fm.get("hotkey") == "f5" and fm.get("missing", "-") == "-"


def test_toml_fence_takes_equals_and_no_header_is_all_body():
    fm = read_front_matter('+++\ntitle = "On Walking"\n+++\nText')
    assert fm.get("title") == "On Walking" and fm.body == "Text" and fm.body_line == 4
    assert read_front_matter("# Title\n---\nrule above").fence is None
    assert parse_field("title = x") is None and parse_field("title = x", toml=True) == ("title", "x")
    assert parse_field("**Name:** Wren") == ("Name", "Wren") and parse_field("just words") is None


@pytest.mark.parametrize("text, kwargs, line, reason", [
    ("name: x\n", {"required": True}, 1, "expected '---'"),
    ("---\nname: x\n", {}, 1, "no closing '---' line"),
    ("---\nname: x\njust words\n---\n", {}, 3, "expected 'key: value', got 'just words'"),
    ("---\nkind = fact\n---\n", {}, 2, "expected 'key: value'"),  # '=' only under '+++'
])
def test_strict_errors_name_the_line(text, kwargs, line, reason):
    with pytest.raises(FrontMatterError) as err:
        read_front_matter(text, **kwargs)
    assert err.value.line == line and reason in err.value.reason


def test_lenient_skips_yaml_it_does_not_read_and_an_unclosed_rule_is_body():
    fm = read_front_matter("---\ntitle: T\ntags:\n  - a\n  - b\n---\nText", strict=False)
    assert [(f.key, f.value) for f in fm.fields] == [("title", "T"), ("tags", "")] and fm.body_line == 7
    assert read_front_matter("---\nno end", strict=False).body == "---\nno end"
