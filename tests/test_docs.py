"""The README's sweep-file reference is generated from the pydantic models and must be current."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_readme_reference_matches_the_schema():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"], cwd=ROOT)
    assert result.returncode == 0, "README.md's reference is stale: run python docs/gen_reference.py"


def test_readme_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_code_layout_names_every_module():
    import re

    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Code layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    unnamed = [f"{package}/{path.name}" for package in ("zoo", "runner", "reports", "videosweep")
               for path in sorted((ROOT / package).glob("*.py"))
               if not path.stem.startswith("__") and not re.search(rf"\b{path.stem}\b", layout)]
    assert not unnamed, f"README's code layout does not name {unnamed}"


SWEEP_KEYS = ("name", "data", "training", "search", "space", "constraints", "resources", "tracking", "notify")


def _readme_sweep_snippets() -> list[str]:
    """Every ```yaml block of the README, and every inline `key: {...}` example of a sweep file's section."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    inline = re.findall(rf"`((?:{'|'.join(SWEEP_KEYS)}): \{{[^`]*\}})`", text)
    return blocks + inline


def test_every_sweep_snippet_of_the_readme_loads():
    """A snippet is a whole sweep file or a fragment of one: laid over a minimal sweep, it must validate
    (the README's own `notify: {url: ..., on: [...]}` once failed: YAML reads `on` as a boolean)."""
    import yaml

    from runner.spec.sweep import sweep_from_mapping

    snippets = _readme_sweep_snippets()
    assert len(snippets) >= 3 and any(s.startswith("notify:") for s in snippets)
    minimal = {"name": "readme", "data": {"root": "examples/seals"}, "space": [{"architecture": ["c3dsmall"]}]}
    for snippet in snippets:
        fragment = yaml.safe_load(snippet.replace("...", "x"))
        assert isinstance(fragment, dict) and set(fragment) <= set(SWEEP_KEYS), snippet
        sweep_from_mapping({**minimal, **fragment}, f"README snippet {snippet[:40]!r}", base=ROOT)
