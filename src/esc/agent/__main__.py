"""``python -m esc.agent --root R``: the node's reaper process, running the agent as its
only child (esc.agent.reaper says why they are two processes)."""

import sys

from esc.agent.reaper import run

sys.exit(run([sys.executable, "-m", "esc.agent.core", *sys.argv[1:]]))
