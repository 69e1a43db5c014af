# The dbgateway server image. The same install and start commands are run by
# tests/integration/test_serve_command.py on every CI run.
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
# NOT_SERVING while draining). It reads the address, and whether TLS is on, from
# the server's own config; with TLS set DBGATEWAY_CA (and DBGATEWAY_SERVER_NAME
# unless the certificate names 127.0.0.1), plus DBGATEWAY_CERT / DBGATEWAY_KEY
# for mutual TLS. tests/integration/test_health_command.py runs this command.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["dbgateway", "health", "--config", "/etc/dbgateway/dbgateway.toml"]
# docker stop waits 10 s before SIGKILL; the drain (shutdown_grace, 7 s by
# default) fits inside it. Raise both together (docker stop -t / stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["dbgateway", "serve", "--config", "/etc/dbgateway/dbgateway.toml"]
