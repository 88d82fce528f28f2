# The k8s-runbooks image: alert receiver, Prefect Kubernetes worker and flow-run Jobs all run it.
#   docker build -t k8s-runbooks:dev .
#   receiver: k8s-runbooks alerts serve --host 0.0.0.0 --port 8080
#   worker:   command ["prefect"], args ["worker", "start", "--pool", ..., "--type", "kubernetes"]
#   flow run: the base job template runs Prefect's command through /usr/bin/env (see base-job-template.json)
# The source tree keeps its layout under /app: runbook_docs finds runbooks/ next to src/ (parents[2]).
# The sandbox (src/k8s_runbooks/sandbox, the `sandbox` extra) is left out by .dockerignore: a product image.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src/ src/
COPY flows/ flows/
COPY tasks/ tasks/
# Editable install: the package stays at /app/src (same path in the runtime stage), dependencies in /opt/venv.
RUN /opt/venv/bin/pip install -e ".[kubernetes]" \
 && rm -rf src/*.egg-info

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/app \
    PREFECT_HOME=/var/lib/k8s-runbooks/prefect \
    DO_NOT_TRACK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    K8S_RUNBOOKS_STATE_DIR=/var/lib/k8s-runbooks/state \
    K8S_RUNBOOKS_REPORTS_DIR=/var/lib/k8s-runbooks/reports \
    K8S_RUNBOOKS_RECEIVER_SPOOL=/var/lib/k8s-runbooks/spool/alert-spool.sqlite3 \
    K8S_RUNBOOKS_RECEIVER_ROUTES=/app/deployments/alert-routes.yaml
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/k8s-runbooks/state /var/lib/k8s-runbooks/reports /var/lib/k8s-runbooks/spool \
             /var/lib/k8s-runbooks/prefect \
 && chown -R app:app /var/lib/k8s-runbooks
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src/ src/
COPY flows/ flows/
COPY tasks/ tasks/
COPY runbooks/ runbooks/
COPY deployments/alert-routes.yaml deployments/alert-routes.yaml
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["k8s-runbooks"]
CMD ["--help"]
