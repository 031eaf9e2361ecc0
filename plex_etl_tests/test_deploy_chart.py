"""The official Dagster Helm chart rendered with deploy/helm/values.yaml, as `helm upgrade
--install` would apply it: the instance it writes is loaded as a real DagsterInstance on the
local PostgreSQL and a table of the code location is materialized through it; the run pod's
Kubernetes Job is built by dagster-k8s's own K8sRunLauncher from the rendered instance and the
rendered code server; the webserver and the daemon run Dagster's stock image.

The chart `dagster/dagster` at the pinned Dagster version is not in the repository: deploy/README.md
step 6 pulls it into .helm/chart/dagster (`PLEX_ETL_DAGSTER_CHART` names another directory).
Without it these tests are skipped and say so. Test-only overrides: the PostgreSQL host, database
and user (the local PostgreSQL at 127.0.0.1:5432, database `<prefix>_chart`, created and dropped).
"""

import importlib.metadata
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from plex_etl_tests.postgres import PG, scratch_postgres
from plex_etl_tests.replication import build_defs, materialize, point_at_test_databases
from plex_etl_tests.test_deploy_k8s import LAST_APPLIED_LIMIT, code_server, run, tool, values

REPO = Path(__file__).resolve().parents[1]
DAGSTER_VERSION = importlib.metadata.version("dagster")
TABLE = "quantio/sucursales"  # a small unpartitioned table of the demo database


@pytest.fixture(scope="module")
def chart() -> Path:
    path = Path(os.environ.get("PLEX_ETL_DAGSTER_CHART") or REPO / ".helm" / "chart" / "dagster")
    if not (path / "Chart.yaml").exists():
        pytest.skip(f"the official chart dagster/dagster {DAGSTER_VERSION} is not in {path}: deploy/README.md "
                    "step 6 (`helm pull dagster --repo ... --untardir .helm/chart`) puts it there")
    meta = yaml.safe_load((path / "Chart.yaml").read_text())
    assert (meta["name"], meta["version"]) == ("dagster", DAGSTER_VERSION), f"{path} is not the chart of Dagster "
    return path


@pytest.fixture(scope="module")
def postgres_db(chart) -> Iterator[str]:
    with scratch_postgres("chart") as name:
        yield name


@pytest.fixture(scope="module")
def rendered(chart, postgres_db, tmp_path_factory) -> list[dict[str, Any]]:
    """Every object of `helm template` with the production values; only the PostgreSQL
    connection points at the test database."""
    overrides = tmp_path_factory.mktemp("values") / "test.yaml"
    overrides.write_text(yaml.safe_dump({"postgresql": {
        "postgresqlHost": PG["host"], "postgresqlUsername": PG["user"], "postgresqlDatabase": postgres_db,
        "service": {"port": PG["port"]}}}))
    out = run([tool("helm"), "template", "dagster", str(chart), "--namespace", "plex-etl",
               "-f", str(REPO / "deploy" / "helm" / "values.yaml"), "-f", str(overrides)])
    return [o for o in yaml.safe_load_all(out) if o]


def test_chart_validates_the_values_against_its_schema(chart, tmp_path):
    """helm checks the values against the chart's values.schema.json while rendering (the
    production values pass: the `rendered` fixture); a misspelt key is refused, not ignored."""
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"concurrency": {"runs": {"maxConcurentRuns": 6}}}))
    args = [tool("helm"), "template", "dagster", str(chart), "-f", str(REPO / "deploy" / "helm" / "values.yaml"),
            "-f", str(typo)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": os.devnull})
    assert done.returncode != 0 and "maxConcurentRuns" in done.stderr, done.stderr


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name} not rendered: {sorted((o['kind'], o['metadata']['name']) for o in objects)}"
    return found[0]


def _instance_yaml(objects: list[dict[str, Any]]) -> str:
    return _one(objects, "ConfigMap", "dagster-instance")["data"]["dagster.yaml"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses a mapping that repeats a key (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = {k for k in keys if keys.count(k) > 1}
        if repeated:
            raise AssertionError(f"the rendered instance repeats {sorted(repeated)}")
        return super().construct_mapping(node, deep=deep)


def _container(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    [container] = _one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return container


def test_rendered_objects_fit_kubectl_apply(rendered):
    for o in rendered:
        size = len(json.dumps(o, separators=(",", ":")))
        assert size < LAST_APPLIED_LIMIT, (o["kind"], o["metadata"]["name"], size)


def test_webserver_and_daemon_run_dagsters_stock_image(rendered):
    for deployment in ("dagster-daemon", "dagster-dagster-webserver"):  # the names deploy/README.md uses
        image = _container(rendered, deployment)["image"]
        assert image.startswith("docker.io/dagster/") and image.endswith(f":{DAGSTER_VERSION}"), image
    webserver = _container(rendered, "dagster-dagster-webserver")
    service = _one(rendered, "Service", "dagster-dagster-webserver")
    port = values()["dagsterWebserver"]["service"]["port"]
    assert [p["containerPort"] for p in webserver["ports"]] == [port] == [p["port"] for p in service["spec"]["ports"]]
    # The kubelet probes the port the UI listens on (by the port's name or number), or the pod
    # never turns Ready.
    probed = webserver["readinessProbe"]["httpGet"]["port"]
    assert probed in {port, *(p["name"] for p in webserver["ports"] if p["containerPort"] == port)}, probed


def test_rendered_instance_names_only_dagsters_classes_and_each_key_once(rendered):
    text = _instance_yaml(rendered)
    instance = yaml.load(text, Loader=_UniqueKeyLoader)
    assert "plex_etl" not in text
    modules = [v["module"] for v in instance.values() if isinstance(v, dict) and "module" in v]
    assert modules and all(m.split(".")[0] in {"dagster", "dagster_postgres", "dagster_k8s"} for m in modules), modules
    assert "max_concurrent_runs" not in instance["run_coordinator"].get("config", {})
    for key in ("run_monitoring", "run_retries", "concurrency", "retention"):
        assert instance[key] == yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())[key], key


@pytest.fixture
def rendered_instance(rendered, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """The rendered dagster.yaml, unchanged, as the webserver, the daemon and run pods load it
    (DAGSTER_PG_PASSWORD comes from the PostgreSQL secret there; the local one has none)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_instance_yaml(rendered))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_rendered_instance_materializes_a_table_on_postgres(rendered_instance, demo_sources, postgres_db,
                                                            tmp_path, monkeypatch):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = rendered_instance
    assert type(instance.run_storage) is PostgresRunStorage
    assert type(instance.event_log_storage) is PostgresEventLogStorage
    assert type(instance.schedule_storage) is PostgresScheduleStorage
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert instance.run_monitoring_max_runtime_seconds == 43200 and instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 6

    point_at_test_databases(monkeypatch, demo_sources, tmp_path / "warehouse.duckdb")
    result = materialize(build_defs(), [TABLE], None, instance=instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node(TABLE.replace("/", "__"))
    assert materialization.metadata["dagster/row_count"].value > 0
    import psycopg2

    with psycopg2.connect(dbname=postgres_db, **PG) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)
        cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                       "'ASSET_MATERIALIZATION'", (result.run_id,))
        assert cursor.fetchone() == (1,)


class _Jobs:
    """Kubernetes' batch API as K8sRunLauncher calls it: keeps the Job it would create."""

    def __init__(self) -> None:
        self.created: list[tuple[str, Any]] = []

    def create_namespaced_job(self, body: Any, namespace: str, **_: Any) -> None:
        self.created.append((namespace, body))


def test_run_pod_gets_the_run_launchers_resources_image_env_and_args(rendered, rendered_instance, tmp_path):
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster_k8s import K8sRunLauncher

    instance_config = yaml.safe_load(_instance_yaml(rendered))["run_launcher"]
    assert (instance_config["module"], instance_config["class"]) == ("dagster_k8s", "K8sRunLauncher")
    # The launcher as the daemon builds it, but with a kubeconfig of no cluster and a batch API
    # that keeps the Job instead of sending it.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {}}]}))
    jobs = _Jobs()
    config = {**instance_config["config"], "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    launcher = K8sRunLauncher(**config, k8s_client_batch_api=jobs)
    launcher.register_instance(rendered_instance)

    # The code server's origin as it reports it: its image and container context from its env.
    server = _container(rendered, "dagster-dagster-user-deployments-plex-etl")
    env = {e["name"]: e.get("value") for e in server.get("env", [])}
    deployment = code_server(values())
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert env.get("DAGSTER_CURRENT_IMAGE") == image == server["image"]
    context = json.loads(env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"]) if env.get(
        "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT") else None
    origin = JobPythonOrigin("__ASSET_JOB", RepositoryPythonOrigin(
        executable_path="/opt/venv/bin/python", code_pointer=ModuleCodePointer("plex_etl.definitions", "defs", None),
        container_image=image, container_context=context))
    run = rendered_instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), job_code_origin=origin)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    [(namespace, job)] = jobs.created
    assert namespace == "plex-etl"
    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.image == image
    assert container.resources.limits == {"memory": "4Gi"}  # runK8sConfig, not the code server's 1Gi
    assert container.resources.requests == {"cpu": "1", "memory": "2Gi"}
    api = container.args.index("api")
    assert container.args[api + 1] == "execute_run" and run.run_id in container.args[-1]
    assert pod.service_account_name == "plex-etl"
    sources = {(e.config_map_ref.name if e.config_map_ref else None, e.secret_ref.name if e.secret_ref else None)
               for e in container.env_from}
    assert sources == {("plex-etl-env", None), (None, "plex-etl-secrets")}
    names = {e.name: e for e in container.env}
    assert names["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref.name == "dagster-postgresql-secret"
    # The instance the run pod loads travels in its args (the launcher's instance ref): the
    # rendered one, with the password from the PostgreSQL secret.
    instance_ref = json.dumps(json.loads(container.args[-1])["instance_ref"])
    assert "PostgresEventLogStorage" in instance_ref and "plex_etl" not in instance_ref
