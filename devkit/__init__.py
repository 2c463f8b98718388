"""The dev kit: what tests, benchmarks and the demo use to drive the product. Not shipped.

- `devkit.simulator`: the AWS simulator (EC2, EBS direct APIs, STS) on 127.0.0.1,
  ``python -m devkit.simulator`` (devkit/simulator/README.md, docs/SIMULATOR.md).
- `devkit.harness`: a real Bacula 15.0.3 Director + SD + FD with the plugin.
- `devkit.fdpeer`: the File Daemon's side of the metaplugin protocol, strict.
- `devkit.driver`: the `ec2-backend` process over pipes, driven by `FDPeer`.
- `devkit.demo`: ``python -m devkit.demo`` (``make demo``).
- `devkit.helpers`: `sha256_file`, `wait_until`.

The product (`bacula_ec2`, `protocol`) never imports this package.
"""
