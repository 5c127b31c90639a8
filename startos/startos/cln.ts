/**
 * The two fields of cln-startos's manifest this package relies on, declared here instead of
 * importing `cln-startos/startos/manifest` (that needs the package from GitHub, and only the
 * npm registry is reachable where this package is checked). Source: Start9Labs/cln-startos,
 * startos/manifest/index.ts at 6ce239753a1c697ffcf59497cf5d4592f91f7e4e (26.6.6:11):
 * `id: 'c-lightning'`, `volumes: ['main']`.
 */
import { T } from '@start9labs/start-sdk'

export type ClnManifest = T.SDKManifest & {
  readonly id: 'c-lightning'
  readonly volumes: ['main']
}

export const clnPackageId = 'c-lightning'

/** The oldest cln-startos that serves the socket where clnSocket expects it. */
export const clnVersionRange = '>=26.6.6:1'

/** cln-startos's daemon whose readiness is `lightning-cli getinfo` answering. */
export const clnRpcHealthCheck = 'lightningd'
