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
