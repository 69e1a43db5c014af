# The dbgateway server image. The same install and start commands are run by
# tests/integration/test_packaging.py on every CI run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients ./clients
COPY server ./server
RUN pip install ".[server]" \
    && useradd --system --uid 10001 --home-dir /var/lib/dbgateway --create-home dbgateway \
    && mkdir -p /etc/dbgateway \
    && rm -rf /src

USER dbgateway
WORKDIR /var/lib/dbgateway
EXPOSE 50051
# `dbgateway health` exits 0 only while the server reports SERVING (it reports
# NOT_SERVING while draining). Set DBGATEWAY_SERVER if the config listens elsewhere.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["dbgateway", "health"]
CMD ["dbgateway", "serve", "--config", "/etc/dbgateway/dbgateway.toml"]
