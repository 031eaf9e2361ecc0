"""The capture worker's Kubernetes Deployment (deploy/k8s/capture-worker.yaml) agrees with the
CLI it runs and with the chart's values it shares names with."""

from pathlib import Path

import yaml

from plex_etl.cli import CAPTURE_STOP_GRACE_SECONDS, build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_the_capture_deployment_runs_one_worker_with_the_chart_instance_and_secrets():
    deployment = yaml.safe_load((DEPLOY / "k8s" / "capture-worker.yaml").read_text())
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    code_server = values["dagster-user-deployments"]["deployments"][0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert pod["terminationGracePeriodSeconds"] > CAPTURE_STOP_GRACE_SECONDS  # SIGTERM commits, then exits
    command = container["command"]
    assert command[:2] == ["plex-etl", "capture"]
    args = build_parser().parse_args(command[1:])
    assert args.source == "plex" and args.lock_wait > 0 and not args.no_report
    assert container["image"].rsplit(":", 1)[0] == code_server["image"]["repository"]
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The instance the UI reads: the chart's ConfigMap as $DAGSTER_HOME/dagster.yaml, its password.
    assert mounts["dagster-instance"]["mountPath"] == env["DAGSTER_HOME"]["value"] + "/dagster.yaml"
    assert volumes["dagster-instance"]["configMap"]["name"] == "dagster-instance"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == values["global"]["postgresqlSecretName"]
    # The code server's configuration, MySQL credentials and Google identity.
    assert pod["serviceAccountName"] == values["global"]["serviceAccountName"]
    assert mounts["plex-etl-config"]["mountPath"] == env["PLEX_ETL_CONFIG_DIR"]["value"]
    assert volumes["plex-etl-config"]["configMap"]["name"] == code_server["volumes"][0]["configMap"]["name"]
    sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert sources == {c["name"] for c in code_server["envConfigMaps"]} | {s["name"] for s in code_server["envSecrets"]}
