/** Where Sovereign listens (SOVEREIGN_PORT) and the host its web interfaces are bound on. */
export const webPort = 8000
export const uiHostId = 'ui'
export const uiInterfaceId = 'ui'

/** The `main` volume, as Sovereign sees it (SOVEREIGN_DATA_DIR). */
export const dataDir = '/data'

/** Valkey, reached by web and worker only on the service's own localhost. */
export const valkeyPort = 6379
export const redisUrl = `redis://127.0.0.1:${valkeyPort}/0`

/**
 * Core Lightning's `main` volume, mounted read-only. cln-startos mounts that volume at
 * /root/.lightning and runs `lightningd --lightning-dir=/root/.lightning` on mainnet, so the
 * JSON-RPC socket is <lightning-dir>/bitcoin/lightning-rpc.
 */
export const clnMountpoint = '/mnt/cln'
export const clnSocket = `${clnMountpoint}/bitcoin/lightning-rpc`

/**
 * The image runs Sovereign as uid/gid 1000; StartOS keeps volumes owned by root. Mounting
 * through this id map shows root's files to Sovereign as its own, so it may open Core
 * Lightning's 0600 socket and keep its data directory owner-only, without running as root.
 */
export const rootAsSovereign = [{ fromId: 0, toId: 1000 }]
