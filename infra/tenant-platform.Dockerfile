# The tenant platform image, for building where a registry is reachable:
#   docker build -f infra/tenant-platform.Dockerfile -t molecule/tenant-platform:latest .
# (context = repository root). infra/build-tenant-image.sh builds an equivalent image with no registry at all; both
# run infra/bundle-tenant-platform.sh, so the two images hold the same /app.

FROM node:20-slim AS build
WORKDIR /src
# pnpm at the version pinned by package.json "packageManager".
RUN corepack enable
# The whole workspace (tenant-platform.Dockerfile.dockerignore leaves out node_modules and build output), so the
# lockfile matches; only the tenant platform, its workspace dependencies and esbuild are installed.
COPY . .
RUN pnpm install --frozen-lockfile --filter "@molecule/tenant-platform..." --filter @molecule/agent-sdk \
 && bash infra/bundle-tenant-platform.sh /out/app

FROM node:20-slim
ENV NODE_ENV=production HOME=/data MOLECULE_DATA_DIR=/data PORT=8080
# pg_dump for TENANT_BACKUP_S3_PREFIX backups of a PostgreSQL DATABASE_URL (and pg_restore/psql for restoring). Its
# major version must be the server's or newer: Debian bookworm's is 15; use a newer base or client for a newer server.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*
# /data holds the embedded database and generated tokens; it belongs to the unprivileged "node" user (uid 1000).
RUN mkdir -p /data && chown node:node /data && chmod 0700 /data
COPY --from=build --chown=root:root /out/app /app
USER node
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/main.mjs"]
