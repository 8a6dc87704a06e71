"""Rewrite the README's configuration table from clipsam_ros.config (run after adding a key)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from clipsam_ros.config import markdown_table  # noqa: E402

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
readme = ROOT / "README.md"
text = readme.read_text()
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
readme.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}")
