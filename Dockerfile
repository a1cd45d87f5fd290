# syntax=docker/dockerfile:1
# The SMS channel service: one image, two commands.
#   server:  docker run -v smsdata:/data -p 50051:50051 smschannel                  (default command)
#   sidecar: docker run -v smsdata:/data -p 8080:8080 smschannel smschannel sidecar
# Both read their configuration from SMSCHANNEL_* variables (see README); give them the same
# SMSCHANNEL_SECRET_KEY (or the same /data volume, where a generated one is kept).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/gen_protos.py scripts/
COPY protos/ protos/
COPY service/ service/
# The generated code is built here, from the protos, never copied from a working tree.
RUN pip install "grpcio-tools==1.85.1" "mypy-protobuf==5.1.0" \
    && python scripts/gen_protos.py \
    && pip install . \
    && pip uninstall --yes grpcio-tools mypy-protobuf

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SMSCHANNEL_DB=/data/smschannel.db \
    SMSCHANNEL_GRPC_ADDR=0.0.0.0:50051 \
    SMSCHANNEL_HTTP_ADDR=0.0.0.0:8080
RUN useradd --create-home --uid 10001 smschannel \
    && mkdir /data \
    && chown smschannel:smschannel /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
VOLUME ["/data"]
EXPOSE 50051 8080
# The sidecar's container overrides this with: smschannel healthcheck sidecar. An outbox container
# (`smschannel outbox`, beside a server with SMSCHANNEL_OUTBOX=process) listens on nothing: no healthcheck.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s CMD ["smschannel", "healthcheck"]
CMD ["smschannel", "server"]
