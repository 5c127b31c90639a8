import { clnPackageId, clnPluginsAction, clnRpcHealthCheck, clnVersionRange } from './cln'
import { storeJson } from './fileModels/store.json'
import { sdk } from './sdk'

export const setDependencies = sdk.setupDependencies(async ({ effects }) => {
  const lightning = await storeJson.read((s) => s.lightning).const(effects)
  if (lightning !== clnPackageId) return {}
  // web and worker reach the node over CLNRest only. cln-startos turns it on by default;
  // should the owner have turned it off, this asks (in Core Lightning's tasks) to turn it
  // back on, and stays until it is. 'important', not 'critical': a critical task would keep
  // the owner's node from starting until they answer it.
  await sdk.action.createTask(effects, clnPackageId, clnPluginsAction, 'important', {
    input: { kind: 'partial', accept: [{ clnrest: true }], set: { clnrest: true } },
    when: { condition: 'input-not-matches', once: false },
    reason: 'Sovereign pays through Core Lightning over CLNRest: turn CLNRest on.',
  })
  return {
    [clnPackageId]: {
      kind: 'running',
      versionRange: clnVersionRange,
      healthChecks: [clnRpcHealthCheck],
    },
  }
})
