# One image for every streamscore process (demo-api, poll, process, sink, exporter, run).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamscore ./streamscore
COPY producers ./producers
COPY streams ./streams
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install -e .

FROM python:3.11-slim
RUN groupadd --system streamscore && useradd --system --gid streamscore --home /app streamscore
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=streamscore:streamscore . .
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    STREAMSCORE_LOG_FORMAT=json STREAMSCORE_HEALTH__HOST=0.0.0.0 \
    STREAMSCORE_REGISTRY__CACHE_DIR=/tmp/schema-cache
USER streamscore
EXPOSE 8000 9101 9102 9103 9104
ENTRYPOINT ["streamscore"]
CMD ["--help"]
