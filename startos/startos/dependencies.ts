import { clnPackageId, clnRpcHealthCheck, clnVersionRange } from './cln'
import { storeJson } from './fileModels/store.json'
import { sdk } from './sdk'

export const setDependencies = sdk.setupDependencies(async ({ effects }) => {
  const lightning = await storeJson.read((s) => s.lightning).const(effects)
  if (lightning !== clnPackageId) return {}
  return {
    [clnPackageId]: {
      kind: 'running',
      versionRange: clnVersionRange,
      healthChecks: [clnRpcHealthCheck],
    },
  }
})
