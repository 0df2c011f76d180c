"""The KubeRay manifests validate against the RayJob / RayCluster CRDs; a broken one is rejected.

The CRDs live in ../shared/kuberay (not part of this repository); the tests skip, saying so, without them.
Validation as that folder's README describes: the v1 openAPIV3Schema, fields with a default dropped
from `required`, objects without x-kubernetes-preserve-unknown-fields treated as closed.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from helpers import ROOT

CRDS = ROOT.parent / "shared" / "kuberay"
MANIFESTS = sorted((ROOT / "launch" / "kuberay").glob("ray*.yaml"))


def _tighten(schema):
    if isinstance(schema, dict):
        properties = schema.get("properties", {})
        if "required" in schema:
            schema["required"] = [r for r in schema["required"] if "default" not in properties.get(r, {})]
            if not schema["required"]:
                del schema["required"]
        if schema.get("type") == "object" and properties and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _tighten(value)
    elif isinstance(schema, list):
        for value in schema:
            _tighten(value)
    return schema


@pytest.fixture(scope="module")
def validators():
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS} (they ship in the workspace's shared/ folder)")
    from jsonschema import Draft202012Validator

    out = {}
    for kind, name in (("RayJob", "ray.io_rayjobs.yaml"), ("RayCluster", "ray.io_rayclusters.yaml")):
        crd = yaml.safe_load((CRDS / name).read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        out[kind] = Draft202012Validator(_tighten(copy.deepcopy(version["schema"]["openAPIV3Schema"])))
    return out


def errors(validators, document) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validators[document["kind"]].iter_errors(document)]


def test_there_are_job_and_cluster_manifests_for_both_layouts():
    assert {p.name for p in MANIFESTS} == {"rayjob-8gpu.yaml", "rayjob-2node.yaml", "raycluster-8gpu.yaml",
                                           "raycluster-2node.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_and_is_safe(validators, path):
    document = yaml.safe_load(path.read_text())
    assert errors(validators, document) == []
    spec = document["spec"].get("rayClusterSpec", document["spec"])
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    assert spec["authOptions"] == {"mode": "token"}  # Ray refuses a driver or job without the cluster's token
    if document["kind"] == "RayJob":
        templates.append(document["spec"]["submitterPodTemplate"])
    for template in templates:
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert template["spec"]["automountServiceAccountToken"] is False
        assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "preresq"  # what the NetworkPolicy admits
        for container in template["spec"]["containers"]:
            assert container["securityContext"]["privileged"] is False
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            if container["name"] != "ray-job-submitter":
                assert any(e["name"] == "MLFLOW_TRACKING_URI" for e in container["env"])
                assert {"/data", "/dev/shm"} <= {m["mountPath"] for m in container["volumeMounts"]}
    gpus = sum(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) * g["replicas"]
               for g in spec["workerGroupSpecs"])
    assert gpus == (16 if "2node" in path.name else 8)


def test_job_entrypoint_names_a_config_that_loads():
    from launch.trainer.config import load_config

    for path in [p for p in MANIFESTS if p.name.startswith("rayjob")]:
        words = yaml.safe_load(path.read_text())["spec"]["entrypoint"].split()
        config = words[words.index("--config") + 1]
        overrides = [w for w in words[words.index("--config") + 2 :] if "=" in w]
        cfg = load_config(ROOT / config, overrides)
        gpus = cfg.rollout.num_actors + cfg.learner.num_ranks * cfg.learner.gpus_per_rank
        assert gpus == (16 if "2node" in path.name else 8)


@pytest.mark.parametrize("breakage", ["typo", "replicas-string", "no-containers"])
def test_a_broken_manifest_is_rejected(validators, breakage):
    document = yaml.safe_load((ROOT / "launch" / "kuberay" / "rayjob-8gpu.yaml").read_text())
    cluster = document["spec"]["rayClusterSpec"]
    if breakage == "typo":
        cluster["workerGroupSpec"] = cluster.pop("workerGroupSpecs")
    elif breakage == "replicas-string":
        cluster["workerGroupSpecs"][0]["replicas"] = "one"
    else:
        del cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert errors(validators, document)


def test_the_network_policy_admits_only_preresq_pods_and_the_operator():
    policy = yaml.safe_load((ROOT / "launch" / "kuberay" / "networkpolicy.yaml").read_text())
    spec = policy["spec"]
    assert policy["kind"] == "NetworkPolicy" and spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "preresq"}}
    own, operator = spec["ingress"]
    assert own["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "preresq"}}}]
    # preresq to preresq: named ports only, and every port a manifest fixes is among them
    opened = [(p["port"], p.get("endPort", p["port"])) for p in own["ports"]]
    assert all(p["protocol"] == "TCP" for p in own["ports"]) and all(high - low < 30000 for low, high in opened)
    fixed = {6379, 8265, 10001}  # KubeRay's own for the head
    for path in MANIFESTS:
        groups = start_params(yaml.safe_load(path.read_text()))
        assert len(groups) == 2, path.name  # the head's and the worker group's
        for params in groups:
            fixed |= {int(v) for k, v in params.items() if k.endswith("-port")}
            assert params.get("min-worker-port") == "10002" and params.get("max-worker-port") == "10999", path.name
    assert fixed >= {8076, 8077, 8078, 8079, 8080, 52365, 10002, 10999}
    assert all(any(low <= port <= high for low, high in opened) for port in fixed)
    assert (32768, 60999) in opened  # the kernel's ephemeral ports: torch.distributed, gloo, NCCL
    # the operator: from its namespace only (no empty namespaceSelector: any namespace), on the dashboard's port
    assert operator["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ray-system"}
    assert operator["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert all("ipBlock" not in source for rule in spec["ingress"] for source in rule["from"])
    blocks = [peer["ipBlock"] for rule in spec["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]} in blocks  # no cloud metadata credentials


def start_params(document) -> list[dict]:
    """Every rayStartParams (the head's and each worker group's) in a manifest."""
    if isinstance(document, dict):
        return [*([document["rayStartParams"]] if "rayStartParams" in document else []),
                *(p for value in document.values() for p in start_params(value))]
    if isinstance(document, list):
        return [p for value in document for p in start_params(value)]
    return []


def test_every_pod_with_an_fs_group_skips_the_recursive_chown():
    for path in sorted((ROOT / "launch" / "kuberay").glob("ray*.yaml")):
        text = path.read_text()
        assert text.count("fsGroup: 1000") == text.count("fsGroupChangePolicy: OnRootMismatch") > 0, path.name


def test_the_image_leaves_out_environments_runs_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "artifacts", "mlruns", "mlflow.db", ".env", "**/auth_token"} <= ignored


def test_a_stopped_or_evicted_job_has_time_to_checkpoint_and_is_submitted_again():
    from helpers import base_config

    grace = base_config().run.stop_grace_s
    for path in sorted((ROOT / "launch" / "kuberay").glob("ray*.yaml")):
        text = path.read_text()
        periods = [int(v) for v in re.findall(r"terminationGracePeriodSeconds: (\d+)", text)]
        assert periods and min(periods) > grace, path.name
        if path.name.startswith("rayjob"):
            spec = yaml.safe_load(text)["spec"]
            wait = int(yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"])
            assert grace < wait < min(periods) and spec["backoffLimit"] >= 1, path.name
