# Test stand-in for docker.io/library/nginx (no image registry is reachable here): Debian's nginx
# on the python:3.11-slim stand-in, laid out like the official image (conf.d/default.conf is the
# site, logs to stdout/stderr, nginx in the foreground).
FROM python:3.11-slim
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
