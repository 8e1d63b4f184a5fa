"""ray_cluster.yaml is accepted by Ray's own autoscaler schema and keeps the node roles."""

from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


def test_cluster_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CONFIG.read_text())
    # what `ray up` does before launching: fill provider defaults, then validate against the schema
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert "GPU" not in types["cpu_worker"]["resources"]
