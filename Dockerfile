# The teal image the Kubernetes manifests use (deploy/kubernetes): the binary, ONNX Runtime's
# library from PyPI (as on one machine), and the bundled models with the example pod configs.
#   docker build -t teal:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The commit `teal --version` names when the context has no .git: --build-arg TEAL_BUILD_COMMIT=...
ARG TEAL_BUILD_COMMIT=
RUN cargo build --release --locked -p teal

FROM python:3.11-slim-bookworm AS onnxruntime
RUN pip install --no-cache-dir onnxruntime==1.31.1

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=onnxruntime /usr/local/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 /usr/lib/teal/
ENV ORT_DYLIB_PATH=/usr/lib/teal/libonnxruntime.so.1.31.1
COPY --from=build /src/target/release/teal /usr/local/bin/teal
COPY models /opt/teal/models
COPY deploy/kubernetes/examples /opt/teal/deploy/kubernetes/examples
USER 65532
ENTRYPOINT ["teal"]
