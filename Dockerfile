# The project's image: the code server and every run pod (deploy/helm/values.yaml), and any
# project-owned Deployment (deploy/k8s/). The Dagster webserver and daemon do not use it: they run
# Dagster's stock image and import nothing of plex_etl.
# The default command is the gRPC code server on port 4000; the Dagster Helm chart and the
# K8s run launcher replace it by setting only the container args (`dagster api grpc ...`,
# `dagster api execute_run ...`), so the ENTRYPOINT is just tini, which execs its args as a
# child it reaps and forwards signals to.
#
# Base image: an exact version tag. No registry was reachable when this was written, so no
# digest is pinned; for a production build pin it with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   # -> sha256:...
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:... .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# pip itself at a fixed version and hash, like every package it installs.
ARG PIP_REQUIREMENT="pip==26.3 --hash=sha256:f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13"

FROM ${PYTHON_IMAGE} AS build
ARG PIP_REQUIREMENT
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libmariadb-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv \
 && echo "$PIP_REQUIREMENT" > /tmp/pip.txt \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/pip.txt
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
# The binary read's extension is optional for pip (setup.py): the image must have it, built
# against the libmariadb mysqlclient links (plex_etl/extract/native.py), or not build at all.
RUN /opt/venv/bin/python -c "from plex_etl.extract.native import binary_module; binary_module()"
# DAGSTER_EVENT_BATCH_SIZE: a run hands its asset materializations to the instance's storage in
# batches, which dagster-postgres writes with one INSERT per batch (a range run records one
# materialization per day). Run pods use this image, so they all batch.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_EVENT_BATCH_SIZE=500
# No instance file: on Kubernetes a run pod gets the instance from the run launcher (in its args)
# and the code server needs none; elsewhere mount deploy/dagster.yaml here (deploy/README.md,
# *Without Kubernetes*).
RUN mkdir -p $DAGSTER_HOME && chown dagster $DAGSTER_HOME
WORKDIR $DAGSTER_HOME
USER dagster
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "plex_etl.definitions"]
