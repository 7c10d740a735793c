# infra-observer image: a virtual environment built on Debian 12, run on distroless Python.
#
# The runtime stage has no shell and no package manager, only Debian 12's Python 3.11. The
# build stage uses that same Python (/usr/bin/python3.11) rather than a python:* image, whose
# interpreter lives under /usr/local: the venv's interpreter link must resolve in the runtime
# stage, and compiled extensions must match its glibc.
#
#   docker build -t infra-observer:dev .
#   docker run --rm --read-only --tmpfs /tmp -e INFRA_OBSERVER_KUBERNETES_ENABLED=true ...
#
# Pin both images by digest in production builds (e.g. debian:12-slim@sha256:...).

ARG BUILD_IMAGE=debian:12-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

# The runtime base by name, for the build stage to read its standard library (COPY --from
# takes a stage or an image name, not a build argument).
FROM ${RUNTIME_IMAGE} AS runtime-base

FROM ${BUILD_IMAGE} AS build

# botocore ships the models of every AWS service (about 30 MB); the daemon talks to SQS, ECS
# and CloudWatch Logs (a crashed task's lines), and the credential chain to STS (IRSA), SSO
# and sign-in. tests/unit/test_dockerfile.py
# checks that every service the code creates a client for is kept.
ARG BOTOCORE_SERVICES="sqs ecs logs sts sso sso-oidc signin"

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# The runtime base ships the standard library as source only, and its root filesystem is
# read-only, so every start would compile what the daemon imports, in memory. Its own
# sources are compiled here (the build's Python may be another 3.11 patch release, whose
# files differ), the way the runtime would (PYTHONOPTIMIZE=2, PYTHONNODEBUGRANGES=1, see the
# runtime stage), and only the bytecode is kept. Checked hashes: a .pyc is used only while
# its source is the file it was compiled from, never run against another.
COPY --from=runtime-base /usr/lib/python3.11 /stdlib-pyc/usr/lib/python3.11
RUN /usr/bin/python3.11 -X no_debug_ranges -m compileall -q -f -j 0 -o 2 \
      --invalidation-mode checked-hash -s /stdlib-pyc -p / /stdlib-pyc/usr/lib/python3.11 \
 && find /stdlib-pyc ! -type d ! -name '*.opt-2.pyc' -delete \
 && find /stdlib-pyc -type d -empty -delete

# By its versioned path, so the venv links to the very file the runtime image has.
RUN /usr/bin/python3.11 -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src

RUN /opt/venv/bin/pip install --no-compile . \
 && /opt/venv/bin/pip uninstall -y pip setuptools

# Keep only the botocore service models listed above.
RUN cd /opt/venv/lib/python3.11/site-packages/botocore/data \
 && for dir in */; do \
      case " ${BOTOCORE_SERVICES} " in \
        *" ${dir%/} "*) ;; \
        *) rm -rf "${dir}" ;; \
      esac; \
    done

# Bytecode is compiled here because the root filesystem is read-only at run time; unchecked
# hashes skip the timestamp checks a read-only, reproducible image never needs. Only at the
# runtime's settings (level 2, no column tables): with PYTHONOPTIMIZE=2 the interpreter reads
# *.opt-2.pyc alone, and without them it would compile every module at each start. Nothing
# in the image runs at level 0 (the HEALTHCHECK and `docker exec` get the image's ENV too),
# so no level-0 .pyc are shipped.
RUN /opt/venv/bin/python -X no_debug_ranges -m compileall -q -j 0 -o 2 \
      --invalidation-mode unchecked-hash /opt/venv/lib

# Fail the build, not the first start, when an import or a trimmed service model is missing;
# with asserts and docstrings stripped, as at run time.
RUN export PYTHONOPTIMIZE=2 PYTHONNODEBUGRANGES=1 \
 && /opt/venv/bin/infra-observer version \
 && /opt/venv/bin/python -c "import infra_observer.app, infra_observer.sources.kubernetes.watch, infra_observer.sources.docker.stream, infra_observer.sources.ecs.source, botocore.session; s = botocore.session.get_session(); [s.create_client(n, region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x') for n in ('sqs', 'ecs', 'sts')]"


FROM ${RUNTIME_IMAGE}

COPY --from=build /opt/venv /opt/venv
# The standard library's bytecode (see the build stage); its sources come with the base.
COPY --from=build /stdlib-pyc/ /

# OCI annotations; scripts/release fills in the version, commit, build time and source.
# Declared after the COPY steps so that their values never invalidate a cached layer.
ARG VERSION=""
ARG REVISION=""
ARG CREATED=""
ARG SOURCE=""
ARG LICENSES="Apache-2.0"
ARG TITLE="infra-observer"
ARG DESCRIPTION="Reports where Prefect flow runs execute (Kubernetes, Docker, ECS) to the Prefect events API"
LABEL org.opencontainers.image.title="${TITLE}" \
      org.opencontainers.image.description="${DESCRIPTION}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}"

# Inside a container the network namespace is the boundary: listen on all of its addresses
# so probes, scrapes and `docker run -p` reach the health server.
# PYTHONOPTIMIZE=2 strips asserts and docstrings, PYTHONNODEBUGRANGES=1 the column tables of
# tracebacks (line numbers stay): with the bytecode compiled to match, idle memory is 3.6 MiB
# lower and start-up half as long (docs/production.md, "Interpreter settings"). Clearing
# PYTHONOPTIMIZE turns it off at a cost: no level-0 bytecode ships, so all compiles at start.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONOPTIMIZE=2 \
    PYTHONNODEBUGRANGES=1 \
    PYTHONUNBUFFERED=1 \
    INFRA_OBSERVER_HEALTH_HOST=0.0.0.0 \
    INFRA_OBSERVER_HEALTH_PORT=8080

# Numeric, so Kubernetes can verify runAsNonRoot (a user name cannot be checked).
USER 65532:65532

EXPOSE 8080

# Python instead of curl or wget: there is no shell or other tool in this image. Kubernetes
# ignores HEALTHCHECK and uses the chart's probes on the same endpoints.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INFRA_OBSERVER_HEALTH_PORT', '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["infra-observer", "run"]
