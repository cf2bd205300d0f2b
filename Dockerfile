# Spine Coding CDS: slim Python, non-root, gunicorn (through `spine-cds serve`), a HEALTHCHECK.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SPINE_CDS_HOST=0.0.0.0 \
    SPINE_CDS_PORT=8080 \
    SPINE_CDS_DATA_DIR=/var/lib/spine-cds

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY cards ./cards
COPY fhir_fixtures ./fhir_fixtures
RUN pip install --no-compile . \
    && useradd --system --uid 10001 --home-dir /var/lib/spine-cds --create-home spine \
    && chown -R spine /var/lib/spine-cds

USER spine
EXPOSE 8080
VOLUME ["/var/lib/spine-cds"]

# Binding 0.0.0.0 needs trusted issuers (SPINE_CDS_TRUSTED_ISSUERS + SPINE_CDS_PUBLIC_BASE_URL),
# or SPINE_CDS_ALLOW_OPEN=true for a closed test network: the service refuses to run open otherwise.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('SPINE_CDS_PORT', '8080'), timeout=2)"

CMD ["spine-cds", "serve"]
