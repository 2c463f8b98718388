"""``python -m devkit.simulator``: run the simulator until SIGTERM/SIGINT.

Prints exactly one line, ``SIMULATOR_ENDPOINT=http://127.0.0.1:<port>``, on stdout once the
socket is listening, so a parent process can start it with ``--port 0`` and read the port.
The same port also speaks HTTPS (``https://127.0.0.1:<port>``, CA at ``/_sim/tls-ca.pem``;
with ``--option tls=true`` plain HTTP to the AWS APIs is refused).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType
from typing import Any

from .errors import SimError
from .model import DEFAULT_SNAPSHOT_DELAY, World
from .server import SimulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.simulator",
                                     description="AWS EC2 + EBS direct simulator")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (loopback only by design)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--snapshot-delay", type=float, default=DEFAULT_SNAPSHOT_DELAY,
                        help="seconds a new snapshot stays pending")
    parser.add_argument("--verbose", action="store_true",
                        help="log one line per request to stderr")
    parser.add_argument("--aws-like", action="store_true",
                        help="AWS default quotas and ~50 ms latency from the start")
    parser.add_argument("--aws-hard", action="store_true",
                        help="aws_hard profile from the start (docs/SIMULATOR.md, Hard mode)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                        help="start-up value of any knob (docs/SIMULATOR.md), repeatable; "
                             "kept across /_sim/reset")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost"):
        parser.error("the simulator binds loopback addresses only")
    options: dict[str, Any] = {"aws_like": True} if args.aws_like else {}
    if args.aws_hard:
        options["aws_hard"] = True
    for item in args.option:
        name, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"--option {item!r}: expected NAME=JSON")
        try:
            options[name] = json.loads(raw)
        except ValueError:
            options[name] = raw
    try:
        world = World(args.snapshot_delay, options)
    except SimError as err:
        parser.error(err.message)

    server = SimulatorServer((args.host, args.port), world, verbose=args.verbose)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    print(f"SIMULATOR_ENDPOINT={server.endpoint}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
