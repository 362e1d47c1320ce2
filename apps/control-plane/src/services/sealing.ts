/** Associated data binds a sealed value to its row: copied elsewhere, it does not open. */
export const tenantEnvAad = (orgId: string) => `cp:org:${orgId}:tenant-env`;
export const operationInputAad = (operationId: string) => `cp:op:${operationId}:input`;
