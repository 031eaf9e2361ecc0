"""The capture worker's Kubernetes Deployment (deploy/k8s/capture-worker.yaml) agrees with the
CLI it runs and with the chart values it shares the instance with. The rest of what every
project Deployment needs (image, service account, env, resources) is checked for every
Deployment of deploy/k8s by test_deploy_k8s.py once it is listed in kustomization.yaml."""

from pathlib import Path

import yaml

from plex_etl.cli import CAPTURE_STOP_GRACE_SECONDS, build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_the_capture_deployment_runs_one_worker_on_the_chart_instance():
    deployment = yaml.safe_load((DEPLOY / "k8s" / "capture-worker.yaml").read_text())
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert pod["terminationGracePeriodSeconds"] > CAPTURE_STOP_GRACE_SECONDS  # SIGTERM commits, then exits
    command = container["args"]
    assert command[:2] == ["plex-etl", "capture"]
    args = build_parser().parse_args(command[1:])
    assert args.source == "plex" and args.lock_wait > 0 and not args.no_report
    assert container["image"] == "plex-etl" and pod["serviceAccountName"] == values["global"]["serviceAccountName"]
    env = {e["name"]: e for e in container["env"]}
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    # The instance the UI reads: the chart's ConfigMap as $DAGSTER_HOME/dagster.yaml, its password.
    assert mount["mountPath"] == env["DAGSTER_HOME"]["value"] + "/dagster.yaml"
    assert mount["name"] == volume["name"] and volume["configMap"]["name"] == "dagster-instance"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == values["global"]["postgresqlSecretName"]
