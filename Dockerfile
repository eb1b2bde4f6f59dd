# syntax=docker/dockerfile:1
# The codepipeline-gateway image: a release build on Debian 12, run on distroless as non-root.
#
#   docker build -t codepipeline-gateway:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 codepipeline-gateway:0.1.0 --upstream emulator --listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:9090
#
# The protos are compiled by protox in build.rs: no protoc is needed. An image for AWS only,
# without the embedded emulator (3.2 MB smaller, no `--upstream emulator`):
#
#   docker build --build-arg CARGO_FEATURES=--no-default-features -t codepipeline-gateway:0.1.0-aws .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG CARGO_FEATURES=""
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is copied
# out of the cached target directory inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked ${CARGO_FEATURES} --bin codepipeline-gateway \
    && install -m 0755 target/release/codepipeline-gateway /usr/local/bin/codepipeline-gateway

# glibc and libgcc from Debian 12 (the same as the builder), CA certificates, no shell; the
# nonroot user is 65532:65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/codepipeline-gateway /usr/local/bin/codepipeline-gateway
USER 65532:65532
# gRPC (with grpc.health.v1 and reflection) and Prometheus metrics (GET /metrics).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/codepipeline-gateway", "serve"]
