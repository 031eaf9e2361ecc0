# Code-location image: `dagster code-server start` by default; the same image runs the
# webserver (`dagster-webserver -w workspace.yaml`) and the daemon (`dagster-daemon run`).
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libmariadb-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY plex_etl ./plex_etl
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 dagster
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV DAGSTER_HOME=/opt/dagster/home
RUN mkdir -p $DAGSTER_HOME && chown dagster $DAGSTER_HOME
COPY --chown=dagster dagster.yaml workspace.yaml $DAGSTER_HOME/
WORKDIR $DAGSTER_HOME
USER dagster
EXPOSE 4000
ENTRYPOINT ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "plex_etl.definitions"]
