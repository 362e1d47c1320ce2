# The control plane image, for building where a registry is reachable (fly deploy -c infra/fly.control-plane.toml
# builds it on Fly's builder):
#   docker build -f infra/control-plane.Dockerfile -t molecule/control-plane:latest .
# (context = repository root). It runs the sources as `pnpm start:cp` does (tsx), with the control plane's workspace
# dependencies installed from the lockfile. The control plane keeps no state of its own on disk in production: give it
# DATABASE_URL.

FROM node:20-slim
WORKDIR /app
RUN corepack enable
# The whole workspace (control-plane.Dockerfile.dockerignore leaves out node_modules and build output), so the
# lockfile matches. The root package brings tsx (a dev dependency: installed before NODE_ENV=production is set).
COPY . .
RUN pnpm install --frozen-lockfile --filter "@molecule/control-plane..." --filter @molecule/root \
 && chmod -R a+rX,go-w /app
ENV NODE_ENV=production HOME=/tmp MOLECULE_DATA_DIR=/tmp/control-plane PORT=8090
USER node
EXPOSE 8090
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--import", "tsx", "apps/control-plane/src/main.ts"]
