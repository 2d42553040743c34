"""The real agent service with the stand-in flow source, for the flows tests.

    python -m tests.agent.agent_driver CONFIG

Everything is the agent's own code (leakcheck.agent.service.Agent, its
check worker, the flowwatch child, spools and uploaders); only the watch's
source is tests/agent/flow_producer.py instead of the kernel watch.
"""

from __future__ import annotations

import sys

from leakcheck import config as config_mod
from leakcheck.agent import logfmt
from leakcheck.agent.service import Agent

if __name__ == "__main__":
    logfmt.configure(1)
    sys.exit(Agent(config_mod.load(sys.argv[1]), verbose=1,
                   watch_source="tests.agent.flow_producer:Producer").serve())
