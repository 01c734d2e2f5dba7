# dyngate, built from this repository (context: the repository root).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/dyngate /usr/local/bin/dyngate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/dyngate /usr/local/bin/dyngate
USER nobody
EXPOSE 6432 8432
ENTRYPOINT ["dyngate", "serve"]
