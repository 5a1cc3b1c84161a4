import sys

from esc.agent.core import main

sys.exit(main())
