# Redis from Debian's package, for machines that cannot pull the `redis` image from a registry
# (this project's CI): docker/compose.test.yml builds it FROM the local base image that
# docker/build-base.sh makes. docker-compose.yml itself uses the official `redis:7` image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="autodep-celery"
# DL3008: the version is whatever Debian stable ships, as the base image fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
# DL3066: Debian's package creates the redis user with whatever system uid is free.
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
CMD ["redis-server", "--dir", "/data"]
