# The llmfleet operator image: `docker build -t <registry>/llmfleet:0.1.0 .`
# Slim Python base, dependencies pinned by requirements/operator.lock, runs as a non-root user
# with no shell work at start-up; the Helm chart adds a read-only root filesystem.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY requirements/operator.lock requirements/operator.lock
RUN pip install --no-deps -r requirements/operator.lock
COPY pyproject.toml README.md NOTICE ./
COPY llmfleet llmfleet
RUN pip install --no-deps . && rm -rf /src

RUN groupadd --gid 10001 llmfleet && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin llmfleet
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080
ENTRYPOINT ["llmfleet"]
CMD ["operator", "--liveness=http://0.0.0.0:8080/healthz"]
