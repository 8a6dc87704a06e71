"""The README's configuration table is generated from the config, and must be current."""
from pathlib import Path

from clipsam_ros.config import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def test_readme_lists_every_config_key_as_generated():
    text = README.read_text()
    table = text[text.index(START) + len(START):text.index(END)].strip()
    assert table == markdown_table(), "regenerate: python scripts/update-readme-config.py"


def test_ci_runs_the_readme_test_command():
    root = README.parent
    assert "bash scripts/run-tests.sh" in README.read_text()
    assert "scripts/run-tests.sh" in (root / ".ci" / "run").read_text()
