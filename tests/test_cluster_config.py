"""The Ray cluster-launcher configs in cluster/ pass Ray's own validation and say what docs/cluster.md says.

cluster/ray_config.py runs the checks `ray up` runs before it contacts a cloud
(Ray's prepare_config and validate_config). The golden files
tests/golden/ray_gpu.yaml and tests/golden/ray_onprem.yaml hold each config's
canonical form: validated, with Ray's defaults filled in, keys sorted. After an
intended change to a config, or a Ray upgrade that changes its defaults,
regenerate them and review the diff:

    FINALBN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_cluster_config.py
"""

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
GOLDEN = Path(__file__).parent / "golden"
CONFIGS = ["gpu", "onprem"]


def _import_ray_config():
    # cluster/ is deployment material, not a package on sys.path: import the module from its file.
    spec = importlib.util.spec_from_file_location("cluster_ray_config", CLUSTER / "ray_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ray_config = _import_ray_config()


def _config(name: str) -> dict:
    return ray_config.load_cluster_config(CLUSTER / f"{name}.yaml")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_ray_validation(name: str) -> None:
    config = _config(name)
    assert config["head_node_type"] in config["available_node_types"]


def test_gpu_config_has_a_gpu_worker_type_the_autoscaler_can_add() -> None:
    config = _config("gpu")
    assert config["provider"]["type"] == "aws"
    head = config["head_node_type"]
    workers = {name: spec for name, spec in config["available_node_types"].items() if name != head}
    gpu_workers = [spec for spec in workers.values() if spec["resources"].get("GPU", 0) >= 1]
    assert gpu_workers, f"no worker type with GPU resources in {sorted(workers)}"
    assert all(spec["min_workers"] == 0 and spec["max_workers"] > 0 for spec in gpu_workers)
    # Trials go to GPU workers only; the head keeps its CPUs for the driver.
    assert config["available_node_types"][head]["resources"] == {"CPU": 0}


def test_onprem_config_lists_its_machines() -> None:
    config = _config("onprem")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
    assert config["auth"]["ssh_user"] and config["auth"]["ssh_private_key"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_node_installs_the_project_and_sees_the_shared_results_folder(name: str) -> None:
    config = _config(name)
    assert config["file_mounts"] == {"~/finalbn": "."}
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert "cd ~/finalbn && ~/venv/bin/pip install -q -e ." in commands
        # docs/cluster.md tells users to pass --out /shared/...
        assert any("mountpoint -q /shared" in command for command in commands)


@pytest.mark.parametrize("name", CONFIGS)
def test_head_listens_where_docs_and_workers_expect(name: str) -> None:
    config = _config(name)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "ray start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    # The dashboard stays on the head's loopback at its default port 8265, which
    # `ray dashboard` forwards to http://127.0.0.1:8265 for `ray job submit`.
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--dashboard-port" not in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


@pytest.mark.parametrize("name", CONFIGS)
def test_canonical_form_matches_golden_file(name: str) -> None:
    text = ray_config.canonical_yaml(CLUSTER / f"{name}.yaml")
    golden = GOLDEN / f"ray_{name}.yaml"
    if os.environ.get("FINALBN_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.read_text() == text, f"{golden} is out of date: FINALBN_UPDATE_GOLDEN=1 regenerates it"


def test_misspelled_worker_key_is_rejected_in_one_line_naming_the_file(tmp_path: Path) -> None:
    config = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    worker = config["available_node_types"]["ray.worker.gpu"]
    worker["min_worker"] = worker.pop("min_workers")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(ray_config.ClusterConfigError) as raised:
        ray_config.load_cluster_config(broken)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{broken}: available_node_types/ray.worker.gpu: ")
    assert "'min_worker' was unexpected" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cluster_name: x\nprovider: {type: aws\n", "while parsing a flow mapping"),
        ("- cluster_name\n", "expected a mapping of cluster settings, found list"),
        ("cluster_name: x\n", "missing required key 'provider'"),
        (
            "cluster_name: x\nprovider: {type: local, head_ip: 10.0.0.1}\n",
            "Please supply a `head_ip` and list of `worker_ips`",
        ),
    ],
    ids=["yaml-syntax", "not-a-mapping", "no-provider", "onprem-without-worker-ips"],
)
def test_other_invalid_files_are_rejected_in_one_line(tmp_path: Path, text: str, problem: str) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    with pytest.raises(ray_config.ClusterConfigError) as raised:
        ray_config.load_cluster_config(broken)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{broken}: ")
    assert problem in message
