# One image for every bridge process: `bridge serve` (ingest API), `bridge worker` (Celery
# worker), `bridge collector` (local Segment-compatible receiver) and Celery Flower.
# docker-compose.yml builds it once and picks the process with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (see .dockerignore): the build metadata, the licence and the
# three packages.
COPY pyproject.toml README.md LICENSE ./
COPY bridge ./bridge
COPY workers ./workers
COPY mappings ./mappings
RUN pip install . "flower>=2.0" \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app bridge \
    && mkdir -p /app && chown bridge:bridge /app

# Run from an empty directory, as an unprivileged user: the installed package is what runs.
WORKDIR /app
USER bridge

# 8080: bridge serve, 8090: bridge collector, 5555: flower.
EXPOSE 8080 8090 5555
CMD ["bridge", "--help"]
