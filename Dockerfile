# Code-location image for Kubernetes (deploy/helm/values.yaml) or any container runtime.
# The default command is the gRPC code server on port 4000; the Dagster Helm chart and the
# K8s run launcher replace it by setting only the container args (`dagster api grpc ...`,
# `dagster api execute_run ...`), so the ENTRYPOINT is just tini, which execs its args as a
# child it reaps and forwards signals to. The same image runs the webserver and the daemon.
#
# Base image: an exact version tag. No registry was reachable when this was written, so no
# digest is pinned; for a production build pin it with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   # -> sha256:...
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:... .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libmariadb-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
# Every dependency at the version and hash of the lock (no dev tools); the project itself last.
COPY requirements-deploy.lock /src/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /src/requirements-deploy.lock
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY plex_etl ./plex_etl
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 dagster
COPY --from=build /opt/venv /opt/venv
# DAGSTER_EVENT_BATCH_SIZE: a range run's asset events are handed to the instance's storage in
# batches, which plex_etl.instance_storage writes at once (planned and materialized days):
# deploy/README.md, *Event log storage*; docs/benchmarks.md, issue 14 D.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_EVENT_BATCH_SIZE=500
# The production instance (PostgreSQL from DAGSTER_PG_* variables). On Kubernetes the Helm
# chart mounts its own instance over this file.
COPY --chown=dagster deploy/dagster.yaml workspace.yaml $DAGSTER_HOME/
WORKDIR $DAGSTER_HOME
USER dagster
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "plex_etl.definitions"]
