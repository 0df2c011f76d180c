"""A picture of the MLflow UI showing a run's answer table with its thumbnails, taken with headless Chromium.

    python benchmarks/mlflow_samples_screenshot.py            # make train's newest run in ./mlflow.db
    python benchmarks/mlflow_samples_screenshot.py --table samples/training.json --out shot.png

Starts `mlflow ui` on the store (a free local port), opens the run's Artifacts view of the table in Chromium
(`--chromium`, e.g. Debian's `chromium` package) and writes the screenshot, dated (default
benchmarks/results/mlflow_samples_<date>.png). The README links it: what a researcher sees, not a claim of a test.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newest_run_with_tables(uri: str, experiment: str, table: str) -> tuple[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} in {uri}: run make train first")
    for run in client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]):
        if table in [a.path for a in client.list_artifacts(run.info.run_id, str(Path(table).parent))]:
            return found.experiment_id, run.info.run_id
    raise SystemExit(f"no run of {experiment!r} in {uri} has the table {table} (tracking.samples_every > 0?)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="sqlite:///mlflow.db", help="the MLflow backend store URI")
    p.add_argument("--experiment", default="preresq")
    p.add_argument("--table", default="samples/validation.json")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"mlflow_samples_{date.today()}.png"))
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--wait-s", type=float, default=25.0, help="how long the page may take to render")
    args = p.parse_args()
    experiment_id, run_id = newest_run_with_tables(args.store, args.experiment, args.table)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", args.store,
                               "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("mlflow ui did not start within 60 s") from None
                time.sleep(1)
        url = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{args.table}"
        subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=2600,1200", f"--virtual-time-budget={int(args.wait_s * 1000)}",
                        f"--screenshot={args.out}", url], check=True, timeout=180,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait(30)
    framed(Path(args.out))
    print(f"{args.out}: {url}")


def framed(path: Path) -> None:
    """The run's page without MLflow's assistant side panel, and with the artifact's local path (a path of the
    machine the store is on) painted over; the offsets are those of MLflow 3.17's layout at this window size."""
    from PIL import Image, ImageDraw

    picture = Image.open(path).convert("RGB").crop((0, 0, 1935, 1200))
    ImageDraw.Draw(picture).rectangle((620, 168, 1320, 192), fill="white")
    picture.save(path)


if __name__ == "__main__":
    main()
