"""``serve --ray`` without a cluster: the config file builds the application Ray would deploy, bad
scaling options are one-line errors before Ray starts, and the plain server never imports Ray."""

import importlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vllm_chatterbox.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray-serve.yaml"


def test_the_config_file_builds_the_application():
    pytest.importorskip("ray", reason="Ray Serve is the 'ray' extra (installed by scripts/setup.sh)")
    from ray.serve.schema import ServeDeploySchema

    from vllm_chatterbox.server.ray_serve import DEPLOYMENT_NAME

    config = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(config)  # Ray's own check of the file
    (app_config,) = config["applications"]
    module, _, name = app_config["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), name)
    deployment = builder(app_config["args"])._bound_deployment
    assert [d["name"] for d in app_config["deployments"]] == [deployment.name] == [DEPLOYMENT_NAME]
    assert deployment.max_ongoing_requests == app_config["args"]["max_queue"]
    assert deployment.max_queued_requests == app_config["args"]["max_queued"]
    assert deployment.ray_actor_options["num_gpus"] == 1 and deployment.ray_actor_options["num_cpus"] == 4
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 8, 8)
    backpressure = deployment._deployment_config.backpressure_config
    assert (backpressure.status_code, backpressure.retry_after_s) == (429, 5)
    with pytest.raises(ValueError, match="bad args"):
        builder({"replicas": "many"})


@pytest.fixture
def root_logging_restored():
    """``serve`` configures the root logger for the server's one format; a test that runs it in this
    process must not leave that behind for the tests after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("flags, message", [
    (["--min-replicas", "2"], "give both --min-replicas and --max-replicas"),
    (["--min-replicas", "3", "--max-replicas", "2"], "min_replicas <= max_replicas"),
    (["--replicas", "0"], "replicas must be at least 1"),
    (["--replica-gpus", "-1"], "must not be negative"),
])
def test_bad_scaling_options_are_one_line_errors(flags, message, capsys, tmp_path, root_logging_restored):
    pytest.importorskip("ray", reason="Ray Serve is the 'ray' extra (installed by scripts/setup.sh)")
    assert main(["serve", "--ray", "--voices-dir", str(tmp_path), *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error


def test_the_plain_server_does_not_import_ray(tmp_path):
    code = ("import sys; import vllm_chatterbox.cli as cli, vllm_chatterbox.server.run; "
            "from vllm_chatterbox.server.app import create_app; "
            "cli._server_setup(cli.build_parser().parse_args(['serve', '--voices-dir', sys.argv[1]])); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
