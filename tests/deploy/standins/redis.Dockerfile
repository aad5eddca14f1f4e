# Test stand-in for docker.io/library/redis (no image registry is reachable here): Debian's
# redis-server on the python:3.11-slim stand-in; compose.yaml passes the same command line.
FROM python:3.11-slim
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
