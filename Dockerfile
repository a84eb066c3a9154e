# e-ID service image. Configure with EID_* environment variables (see README "Configuration").
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/eid
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/eid/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/eid/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EID_DATA_DIR=/var/lib/eid EID_DATABASE_URL=sqlite+aiosqlite:////var/lib/eid/eid.db
RUN groupadd --system eid && useradd --system --gid eid --home-dir /var/lib/eid --create-home eid
COPY --from=build /opt/eid /opt/eid
WORKDIR /opt/eid-src
# `eid migrate` looks for alembic.ini and migrations/ in the working directory.
COPY --chown=root:root alembic.ini ./
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root --chmod=755 docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER eid
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"
# No arguments: `eid migrate && eid serve`. With arguments: `eid <arguments>` (e.g. demo mode).
ENTRYPOINT ["docker-entrypoint.sh"]
