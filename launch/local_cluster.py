"""A real multi-node Ray cluster on one machine, to rehearse the cluster layouts (configs/rehearsal.yaml) and to
test what a cluster does to a run (tests/test_cluster.py, benchmarks/cluster_rehearsal.py).

A head (with the dashboard, for `ray job submit`) and worker nodes, each with its own raylet, object store (in
bytes) and worker processes, the workers declaring GPUs so that placement behaves as on GPU nodes while the roles
compute on `device: cpu`; token authentication on. Stopped by its own handles, never `ray stop` (which ends every
Ray process on the machine).

    python launch/local_cluster.py --workers 3 --gpus 1        # up until Ctrl-C; writes artifacts/local-cluster.env
    . artifacts/local-cluster.env                              # in another shell: the token, Ray's address
    ray job submit --working-dir . -- python launch/grpo.py --config configs/rehearsal.yaml \\
        run.output_dir=$PWD/artifacts/rehearsal
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import threading
from pathlib import Path


def token_environment() -> dict:
    """This environment with a fresh Ray token, and this Python's bin folder first (a job's `python`, `ray`)."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


class LocalCluster:
    """`workers` worker nodes of `cpus` CPUs and `gpus` declared GPUs each, plus a head that declares none (so no
    GPU bundle lands on it); each object store holds `store_bytes`. `env`: what a client needs (the token)."""

    def __init__(self, workers: int, gpus: int, cpus: int, dashboard_port: int, store_bytes: int = 100 * 2**20):
        from ray.cluster_utils import Cluster

        self.env = token_environment()
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.node_args = {"num_cpus": cpus, "num_gpus": gpus, "object_store_memory": store_bytes}
        self.added = 0
        with self.authenticated():
            # shutdown_at_exit=False: Ray would otherwise make this process a process-group leader with a
            # "reaper" per node that SIGTERMs the whole group once it sees its pipe close, and install a SIGTERM
            # handler here that exits; a test process ended that way long after a node was killed. stop() ends
            # the nodes instead, and the command stops them on Ctrl-C or SIGTERM.
            self.cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args={
                "num_cpus": 1, "num_gpus": 0, "object_store_memory": store_bytes, "include_dashboard": True,
                "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port})
            for _ in range(workers):
                self.add_worker()
            self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        """The GCS address (`ray.init(address=...)`, RAY_ADDRESS)."""
        return self.cluster.address

    def add_worker(self):
        """One more worker node (as a replacement node joins a cluster); returns it."""
        self.added += 1
        with self.authenticated():
            # Each node unpacks a job's working dir into a folder of its own, as on separate machines: in the one
            # session folder they share here, a node's agent would replace the folder the driver runs in.
            return self.cluster.add_node(**self.node_args, runtime_env_dir_name=f"runtime_resources_node{self.added}")

    def kill_node(self, node_id_prefix: str) -> str:
        """SIGKILL every process of the worker node whose id starts with `node_id_prefix` (its raylet, agents and
        worker processes, all at once, as when a machine dies); returns the node's whole id."""
        import psutil

        [node] = [n for n in self.cluster.worker_nodes if n.node_id.startswith(node_id_prefix)]
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        family = [raylet, *raylet.children(recursive=True)]
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
        psutil.wait_procs(family, timeout=15)
        with self.authenticated():
            self.cluster.remove_node(node, allow_graceful=False)  # its bookkeeping; the processes are gone
        return node.node_id

    @contextlib.contextmanager
    def authenticated(self):
        """The cluster's token in this process's environment (the node processes inherit it) and in Ray's config
        (read when Ray was imported), then this process's own back."""
        from ray._raylet import Config

        saved = dict(os.environ)
        os.environ.update(self.env)
        Config.initialize("")
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            Config.initialize("")

    def stop(self) -> None:
        with self.authenticated():
            self.cluster.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3, help="worker nodes")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs each worker node declares")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs each worker node declares")
    parser.add_argument("--store-bytes", type=int, default=256 * 2**20, help="each node's object store")
    parser.add_argument("--dashboard-port", type=int, default=8265)
    parser.add_argument("--env-file", default="artifacts/local-cluster.env", help="where the client settings go")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.workers, args.gpus, args.cpus, args.dashboard_port, args.store_bytes)
    try:
        env_file = Path(args.env_file)
        env_file.parent.mkdir(parents=True, exist_ok=True)
        settings = "".join(f"export {k}={cluster.env[k]}\n" for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"))
        settings += f"export RAY_ADDRESS={cluster.dashboard}\n"
        handle = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token: this user's only
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as out:
            out.write(settings)
        print(f"a head and {args.workers} worker nodes ({args.cpus} CPU, {args.gpus} declared GPU, "
              f"{args.store_bytes} bytes of object store each) are up; dashboard {cluster.dashboard}. In another "
              f"shell: . {env_file}; then `ray job submit --working-dir . -- python launch/grpo.py ...`. Ctrl-C "
              "stops them.", flush=True)
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        stopped.wait()
    finally:
        cluster.stop()
        Path(args.env_file).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
