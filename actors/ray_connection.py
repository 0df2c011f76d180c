"""This driver's connection to Ray: the job's cluster, or a local Ray with a token of its own."""

from __future__ import annotations

import logging
import os
import secrets

import ray


def connect_ray(address: str | None, num_cpus: int) -> None:
    """Join the cluster at `address` or RAY_ADDRESS (as under `ray job submit`), else start a local Ray.

    A local Ray gets token authentication with a fresh token for this process (unless RAY_AUTH_MODE or
    RAY_AUTH_TOKEN is set already): the actors inherit it, and any other driver that finds the ports is
    refused. Joining a cluster uses its token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token.
    """
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    if os.environ.setdefault("RAY_AUTH_MODE", "token") == "token" and "RAY_AUTH_TOKEN" not in os.environ:
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray read RAY_AUTH_MODE when it was imported; this re-reads it (as ray.init does for its own default).
    from ray._raylet import Config

    Config.initialize("")
    # "local": a Ray of its own even where another was started on this machine (plain ray.init() would join the
    # newest one it finds in /tmp/ray). WARNING: Ray's "Started a local Ray instance" is said by the line below.
    context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                       logging_level=logging.WARNING)
    print(f"local Ray at {context.address_info['gcs_address']}, token authentication "
          f"{'on' if os.environ['RAY_AUTH_MODE'] == 'token' else 'OFF (RAY_AUTH_MODE)'}", flush=True)
