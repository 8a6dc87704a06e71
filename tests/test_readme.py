"""The README's configuration table is generated from the config, and must be current."""
from pathlib import Path

from clipsam_ros.config import markdown_table, parameter_table

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def generated(doc: Path) -> str:
    text = doc.read_text()
    return text[text.index(START) + len(START):text.index(END)].strip()


def test_readme_lists_every_config_key_as_generated():
    assert generated(README) == markdown_table(), "regenerate: python scripts/update-readme-config.py"


def test_the_ros_parameter_table_is_generated_with_what_a_running_node_takes():
    table = generated(README.parent / "docs" / "ROS2.md")
    assert table == parameter_table(), "regenerate: python scripts/update-readme-config.py"
    rows = {line.split("|")[1].strip(" `"): line.split("|")[4].strip() for line in table.splitlines()[2:]}
    assert rows["refiner.threshold"] == "yes" and rows["device"] == "no"


def test_ci_runs_the_readme_test_command():
    root = README.parent
    assert "bash scripts/run-tests.sh" in README.read_text()
    assert "scripts/run-tests.sh" in (root / ".ci" / "run").read_text()
