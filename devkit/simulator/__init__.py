"""A local AWS simulator (EC2 query API + EBS direct API) that plain boto3 talks to.

Start it with ``python -m devkit.simulator`` (prints ``SIMULATOR_ENDPOINT=...``), with
:func:`start_in_thread` in-process, or through the pytest fixtures in
``devkit.simulator.fixtures``; drive the world with :class:`SimulatorClient`.

Layout: ``model`` (world and data), ``ec2_api`` (EC2 query protocol, encoded from botocore's
model by ``query_codec``), ``ebs_api`` (EBS direct REST-JSON), ``tokens`` (block/page
tokens), ``control`` (``/_sim/`` API and client), ``policy`` (latency/quota/fault hook),
``server`` (HTTP).
"""

from .control import SimulatorClient, SimulatorError
from .errors import SimError
from .model import BLOCK_SIZE, BLOCKS_PER_GIB, GIB, OWNER_ID, World
from .policy import Call, Policy
from .server import SimulatorServer, start_in_thread, stop

__all__ = [
    "BLOCKS_PER_GIB",
    "BLOCK_SIZE",
    "GIB",
    "OWNER_ID",
    "Call",
    "Policy",
    "SimError",
    "SimulatorClient",
    "SimulatorError",
    "SimulatorServer",
    "World",
    "start_in_thread",
    "stop",
]
