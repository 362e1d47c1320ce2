# The reference echo workspace image, for building where a registry is reachable:
#   docker build -f infra/workspace-echo.Dockerfile -t molecule/workspace-echo:latest .
# (context = repository root). infra/build-workspace-image.sh builds an equivalent image with no registry at all.

FROM node:20-slim AS build
WORKDIR /src
# pnpm at the version pinned by package.json "packageManager".
RUN corepack enable
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
# The SDK and the workspace packages it bundles (contracts' inbound header and backoff, identity's token compare).
COPY packages/agent-sdk/package.json packages/agent-sdk/
COPY packages/contracts/package.json packages/contracts/
COPY packages/identity/package.json packages/identity/
RUN pnpm install --frozen-lockfile --filter @molecule/agent-sdk...
COPY packages/agent-sdk/src packages/agent-sdk/src
COPY packages/contracts/src packages/contracts/src
COPY packages/identity/src packages/identity/src
RUN pnpm -F @molecule/agent-sdk exec esbuild src/echo-agent.ts --bundle --platform=node --target=node20 \
      --format=cjs --legal-comments=none --outfile=/out/echo-agent.js

FROM node:20-slim
ENV NODE_ENV=production HOME=/workspace AGENT_PORT=8000
# /workspace holds the agent's state (its auth token in .molecule/); it belongs to the unprivileged "node" user.
RUN mkdir -p /app /workspace/.molecule \
 && chown -R node:node /workspace \
 && chmod 0700 /workspace/.molecule
COPY --from=build --chown=root:root /out/echo-agent.js /app/echo-agent.js
USER node
WORKDIR /workspace
VOLUME ["/workspace"]
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/echo-agent.js"]
