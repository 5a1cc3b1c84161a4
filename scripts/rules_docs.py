"""Regenerate the rule table's documentation from the table itself (`make rules-docs`).

docs/rules.dot is `escadm ha rules --dot`; docs/rules.svg is rendered from it by
Graphviz's `dot`; docs/ha.md quotes `escadm ha rules --width 100` between the
`rules-table` markers. Unit tests (tests/unit/test_rules.py) fail when any of them
no longer matches the table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- rules-table:begin -->\n```text\n"
END = "```\n<!-- rules-table:end -->"


def escadm(*args: str) -> str:
    """`escadm ha rules ARGS` of this checkout (not whichever esc the venv installed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "esc.cli.escadm", "ha", "rules", *args], check=True,
                          capture_output=True, text=True, cwd=ROOT, env=env).stdout


def main() -> None:
    dot_file = ROOT / "docs/rules.dot"
    dot_file.write_text(escadm("--dot"))
    if shutil.which("dot") is None:
        sys.exit("rules_docs: Graphviz's dot is missing (apt-get install graphviz)")
    subprocess.run(["dot", "-Tsvg", str(dot_file), "-o", str(ROOT / "docs/rules.svg")], check=True)
    ha = ROOT / "docs/ha.md"
    text = ha.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    ha.write_text(head + BEGIN + escadm("--width", "100") + END + tail)
    print("rules_docs: wrote docs/rules.dot, docs/rules.svg and the table in docs/ha.md")


if __name__ == "__main__":
    main()
