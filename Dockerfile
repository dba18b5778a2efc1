# hookstream: one image for every role (gateway, worker, sinks, simulators); the command picks it.
#   docker build -t hookstream .
#   docker run --rm hookstream --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user; its home holds the runtime state (Faust's data dir).
RUN groupadd --system --gid 10001 hookstream \
    && useradd --system --uid 10001 --gid hookstream \
        --home-dir /var/lib/hookstream --create-home --shell /usr/sbin/nologin hookstream

WORKDIR /app

# The package first (its own layer), then the example flows and webhooks and the demo poster.
# README.md* : the project's readme, copied when present (pyproject.toml refers to it).
COPY pyproject.toml README.md* ./
COPY schemas/ schemas/
COPY streams/ streams/
COPY agents/ agents/
RUN pip install '.[otel]' \
    && rm -rf build ./*.egg-info
COPY examples/ examples/
# The one-shot poster of the compose demo (the `demo` service of docker-compose.yml).
COPY scripts/demo.py scripts/demo.py

ENV HOOKSTREAM_STATE_DIR=/var/lib/hookstream \
    HOOKSTREAM_CONFIG=/app/examples/flows.yaml

USER hookstream:hookstream
WORKDIR /var/lib/hookstream

# The webhook gateway's port (gateway.port in the flows file).
EXPOSE 8080

ENTRYPOINT ["hookstream"]
CMD ["--help"]
