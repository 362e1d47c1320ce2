# The control plane image, for building where a registry is reachable (fly deploy -c infra/fly.control-plane.toml
# builds it on Fly's builder):
#   docker build -f infra/control-plane.Dockerfile -t molecule/control-plane:latest .
# (context = repository root). infra/build-control-plane-image.sh builds an equivalent image with no registry at all;
# both run infra/bundle-control-plane.sh, so the two images hold the same /app. The control plane keeps no state of
# its own on disk in production: give it DATABASE_URL.

FROM node:20-slim AS build
WORKDIR /src
# pnpm at the version pinned by package.json "packageManager".
RUN corepack enable
# The whole workspace (control-plane.Dockerfile.dockerignore leaves out node_modules and build output), so the
# lockfile matches; only the control plane, its workspace dependencies and esbuild are installed.
COPY . .
RUN pnpm install --frozen-lockfile --filter "@molecule/control-plane..." --filter @molecule/agent-sdk \
 && bash infra/bundle-control-plane.sh /out/app

FROM node:20-slim
ENV NODE_ENV=production HOME=/data MOLECULE_DATA_DIR=/data PORT=8090
# /data holds the embedded database and generated secrets when DATABASE_URL is unset (development only).
RUN mkdir -p /data && chown node:node /data && chmod 0700 /data
COPY --from=build --chown=root:root /out/app /app
USER node
WORKDIR /data
EXPOSE 8090
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/cp/main.mjs"]
