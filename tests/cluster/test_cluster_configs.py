"""cluster/: the launcher YAML validates against Ray's own schema, the KubeRay manifests carry
the fields KubeRay needs, every config turns Ray's token authentication on and keeps the job API
off the network, and the job runtime env parses and keeps data out of the upload."""

from __future__ import annotations

import copy
import itertools
import json
import shlex
from pathlib import Path

import pytest
import ray
import yaml

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
AUTH_SECRET_KEY = "auth_token"  # the key KubeRay's authOptions.secretName expects
RAY_MAJOR_MINOR = ".".join(ray.__version__.split(".")[:2])


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _load_all(path: Path) -> dict[str, dict]:
    """Documents of a multi-document YAML keyed by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def test_launcher_yaml_matches_ray_schema(launcher):
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))


def test_launcher_schema_check_catches_a_bad_key(launcher):
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    bad = {**launcher, "max_worker": 4}
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(bad, json.loads(schema_path.read_text()))


def test_launcher_has_cpu_head_gpu_workers_shared_storage_and_project(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    workers = [t for name, t in types.items() if name != launcher["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in workers)
    image = launcher["docker"]["image"]
    assert "gpu" in image and _major_minor(image.split(":")[1]) == RAY_MAJOR_MINOR
    assert any("-v /mnt/shared:/mnt/shared" in o for o in launcher["docker"]["run_options"])
    assert any("/mnt/shared" in c for c in launcher["initialization_commands"])
    setup = " ".join(launcher["setup_commands"])
    assert "pip install -e /home/ray/umsrep" in setup and f"=={RAY_MAJOR_MINOR}" in setup
    assert launcher["file_mounts"]["/home/ray/umsrep"] == "."


def _docker_env(run_options: list[str]) -> dict[str, str]:
    """``-e NAME=VALUE`` / ``--env NAME=VALUE`` of docker run options, as docker reads them."""
    tokens = [t for option in run_options for t in shlex.split(option)]
    pairs = [b for a, b in itertools.pairwise(tokens) if a in ("-e", "--env")]
    pairs += [t.split("=", 1)[1] for t in tokens if t.startswith("--env=")]
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def test_launcher_turns_token_auth_on_and_keeps_the_dashboard_local(launcher):
    docker = launcher["docker"]
    assert not {"head_run_options", "worker_run_options"} & docker.keys()  # one env for all
    assert _docker_env(docker["run_options"]).get("RAY_AUTH_MODE") == "token"
    # the token reaches every node at the container user's default path (~ is /home/ray)
    mounts = launcher["file_mounts"]
    assert Path(mounts["/home/ray/.ray/auth_token"]).expanduser() == (
        Path.home() / ".ray" / "auth_token"
    )
    head = shlex.split(" ".join(launcher["head_start_ray_commands"]))
    hosts = [t.split("=", 1)[1] for t in head if t.startswith("--dashboard-host=")]
    assert hosts == ["127.0.0.1"]  # reached through `ray dashboard` (an SSH tunnel)
    commands = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    assert not any("RAY_AUTH_MODE" in c for c in commands)  # nothing turns it back off


def _check_ray_cluster_auth(spec: dict) -> None:
    """Token auth on every Ray container, from the Secret authOptions names; no public head."""
    auth = spec["authOptions"]
    assert auth["mode"] == "token"
    secret = auth["secretName"]
    head = spec["headGroupSpec"]
    assert head.get("serviceType") == "ClusterIP" and not head.get("enableIngress", False)
    pods = [head["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        ray_container = pod["spec"]["containers"][0]  # KubeRay's Ray container is the first
        env = {e["name"]: e for e in ray_container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", ray_container["name"]
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": AUTH_SECRET_KEY}, ray_container["name"]
    # the README's command creates that very Secret from the client's own token
    readme = (CLUSTER / "README.md").read_text()
    assert f"kubectl create secret generic {secret} --from-file={AUTH_SECRET_KEY}=" in readme


def _check_ray_cluster_spec(spec: dict) -> None:
    assert _major_minor(spec["rayVersion"]) == RAY_MAJOR_MINOR
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    groups = spec["workerGroupSpecs"]
    assert groups and all("groupName" in g and "rayStartParams" in g for g in groups)
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        (worker,) = pod["containers"]
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "persistentVolumeClaim" in volumes[mounts["/mnt/shared"]]


def test_raycluster_manifest():
    docs = _load_all(CLUSTER / "kuberay" / "raycluster.yaml")
    cluster, pvc = docs["RayCluster"], docs["PersistentVolumeClaim"]
    assert cluster["apiVersion"] == "ray.io/v1"
    _check_ray_cluster_spec(cluster["spec"])
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for g in cluster["spec"]["workerGroupSpecs"]
        for v in g["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {pvc["metadata"]["name"]}
    _check_ray_cluster_auth(cluster["spec"])


def test_rayjob_manifest():
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"] == (
        "python -m sweeps.run sweeps/cxr_heterogeneous.yaml --output /mnt/shared/runs"
    )
    _check_ray_cluster_spec(spec["rayClusterSpec"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["RAY_CHDIR_TO_TRIAL_DIR"] == "0"
    assert "RAY_AUTH_MODE" not in runtime_env["env_vars"]  # the job inherits the cluster's
    _check_ray_cluster_auth(spec["rayClusterSpec"])


@pytest.mark.parametrize("drop", ["head RAY_AUTH_TOKEN", "worker RAY_AUTH_MODE", "authOptions"])
def test_auth_check_catches_a_missing_piece(drop):
    cluster = _load_all(CLUSTER / "kuberay" / "raycluster.yaml")["RayCluster"]
    spec = copy.deepcopy(cluster["spec"])
    where, _, name = drop.partition(" ")
    if where == "authOptions":
        del spec["authOptions"]
    else:
        group = spec["headGroupSpec"] if where == "head" else spec["workerGroupSpecs"][0]
        container = group["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] != name]
    with pytest.raises((AssertionError, KeyError)):
        _check_ray_cluster_auth(spec)


def _excluded(excludes: list[str], path: str) -> bool:
    """Whether Ray's working_dir packaging would skip ``path`` (same gitwildmatch matcher)."""
    thirdparty = pytest.importorskip(
        "ray._private.thirdparty.pathspec", reason="Ray no longer vendors pathspec here"
    )
    return bool(thirdparty.PathSpec.from_lines("gitwildmatch", excludes).match_file(path))


def test_runtime_env_parses_and_excludes_data_not_the_package():
    from ray.runtime_env import RuntimeEnv

    raw = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**raw)  # raises on unknown or malformed fields
    assert env["working_dir"] == "."
    assert env["env_vars"]["RAY_CHDIR_TO_TRIAL_DIR"] == "0"
    assert float(env["env_vars"]["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) <= 0.5
    excludes = raw["excludes"]
    for path in ("data/shenzhen/x.png", "runs/r1/metrics.parquet", ".git/HEAD"):
        assert _excluded(excludes, path), path
    for path in ("umsrep/data/__init__.py", "umsrep/data/synthetic/cxr.py", "sweeps/run.py"):
        assert not _excluded(excludes, path), path
