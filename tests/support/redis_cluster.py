"""A local Redis Cluster for the tests: three masters, no replicas, no persistence, on spare ports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.redis_server import RedisServer, free_port

STARTUP_TIMEOUT_S = 30.0


def _redis_cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise RuntimeError("redis-cli is not installed; the cluster test needs it to create the cluster")
    return binary


class RedisClusterNodes:
    """``redis-server --cluster-enabled yes`` x N joined by ``redis-cli --cluster create``.

    Each node gets an explicit cluster bus port (``--cluster-port``): the default, port + 10000, may be taken
    or beyond 65535 for an ephemeral port.
    """

    def __init__(self, masters: int = 3) -> None:
        self.cli = _redis_cli()
        self.directory = Path(tempfile.mkdtemp(prefix="goodnight-redis-cluster-"))
        self.nodes: list[RedisServer] = []
        for _ in range(masters):
            port = free_port()
            self.nodes.append(
                RedisServer(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.directory / f"nodes-{port}.conf"),
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "5000",
                    port=port,
                )
            )

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """Any node's URL is a cluster URL: the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterNodes:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=STARTUP_TIMEOUT_S,
            )
            self._wait_until_ok()
        except BaseException:
            self.close()
            raise
        return self

    def cluster_info(self, port: int) -> dict[str, str]:
        output = subprocess.run(
            [self.cli, "-p", str(port), "cluster", "info"],
            check=True,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return dict(line.split(":", 1) for line in output.split() if ":" in line)

    def _wait_until_ok(self) -> None:
        """Every node must agree the cluster is whole, or a client may be routed to one that does not."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            infos = [self.cluster_info(port) for port in self.ports]
            if all(
                info.get("cluster_state") == "ok"
                and info.get("cluster_slots_ok") == "16384"
                and info.get("cluster_known_nodes") == str(len(self.nodes))
                for info in infos
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster on ports {self.ports} never became ok: {infos}")
            time.sleep(0.1)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.directory, ignore_errors=True)
