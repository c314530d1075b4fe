"""cluster/: the launcher YAML validates against Ray's own schema, the KubeRay manifests carry
the fields KubeRay needs, and the job runtime env parses and keeps data out of the upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import yaml

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
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
