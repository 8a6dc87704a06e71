"""Rewrite the configuration tables from clipsam_ros.config (run after adding or changing a key):
the README's key table and docs/ROS2.md's parameter table."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from clipsam_ros.config import markdown_table, parameter_table  # noqa: E402

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
for doc, table in ((ROOT / "README.md", markdown_table), (ROOT / "docs" / "ROS2.md", parameter_table)):
    text = doc.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
