/**
 * What this package relies on of cln-startos, declared here instead of imported from
 * `cln-startos/startos/...` (that needs the package from GitHub, and only the npm registry is
 * reachable where this package is checked). Source: Start9Labs/cln-startos at
 * 6ce239753a1c697ffcf59497cf5d4592f91f7e4e (26.6.6:11): startos/manifest/index.ts
 * (`id: 'c-lightning'`, `volumes: ['main']`), startos/utils.ts (`clnrestPort = 3010`),
 * startos/interfaces.ts (host `clnrest`, bound with `protocol: 'http'`) and
 * startos/actions/config/plugins.ts (action `plugins`, whose `clnrest` toggle turns CLNRest on).
 */
import { T } from '@start9labs/start-sdk'

export type ClnManifest = T.SDKManifest & {
  readonly id: 'c-lightning'
  readonly volumes: ['main']
}

export const clnPackageId = 'c-lightning'

/** The oldest cln-startos whose socket, CLNRest host and Plugins action are as above. */
export const clnVersionRange = '>=26.6.6:1'

/** cln-startos's daemon whose readiness is `lightning-cli getinfo` answering. */
export const clnRpcHealthCheck = 'lightningd'

/**
 * CLNRest's host and port. cln-startos forces `clnrest-protocol=http` (its
 * fileModels/config.ts) and binds the host only while CLNRest is on; over the LXC bridge it
 * is plain HTTP, hence `ssl: false` when asking for the bridge address (as
 * ride-the-lightning-startos does).
 */
export const clnrestHostId = 'clnrest'
export const clnrestPort = 3010

/**
 * cln-startos's Plugins action, as the SDK's task API needs it: its id and the part of its
 * input Sovereign asks for (the SDK's ActionInfo shape: it reads `id` alone, `_INPUT` only carries the type).
 */
export const clnPluginsAction: {
  readonly id: 'plugins'
  readonly _INPUT: { clnrest: boolean }
} = {
  id: 'plugins',
  _INPUT: { clnrest: true },
}
