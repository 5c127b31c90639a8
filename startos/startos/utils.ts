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
 * Core Lightning's `main` volume, mounted read-only in the `lightning-access` oneshot only.
 * cln-startos mounts that volume at /root/.lightning and runs
 * `lightningd --lightning-dir=/root/.lightning` on mainnet, so the JSON-RPC socket is
 * <lightning-dir>/bitcoin/lightning-rpc.
 */
export const clnMountpoint = '/mnt/cln'
export const clnSocket = `${clnMountpoint}/bitcoin/lightning-rpc`

/**
 * Where `lightning-access` leaves Sovereign's rune on Sovereign's own
 * volume, and the file web and worker read it from at each call (SOVEREIGN_LIGHTNING_RUNE_FILE).
 */
export const lightningDir = `${dataDir}/lightning`
export const runeFile = `${lightningDir}/rune`

/**
 * `lightning-access` runs Django only to reach `manage.py`: on a throwaway data directory, so
 * that root creates nothing in Sovereign's data but the rune's folder (a database or key file
 * made by root there would lock web out).
 */
export const lightningAccessDataDir = '/tmp/lightning-access'

/**
 * The image runs Sovereign as uid/gid 1000; StartOS keeps volumes owned by root. Mounting
 * Sovereign's own volume through this id map shows root's files to Sovereign as its own, so it
 * keeps its data directory owner-only without running as root. Core Lightning's volume is
 * never mounted through it: that would make the node's seed (bitcoin/hsm_secret) readable by
 * uid 1000.
 */
export const rootAsSovereign = [{ fromId: 0, toId: 1000 }]

/**
 * The owner `lightning-access` gives the rune, as its mount shows ids. That mount of
 * Sovereign's volume has no id map, so ids there are the ones on disk, and web and worker see
 * disk uid 0 as 1000 (rootAsSovereign) and any other uid, 1000 included, as nobody. Owned by
 * 1000 on disk, the 0600 rune would be unreadable to them; owned by 0 on disk, it is theirs.
 */
export const runeOwnerOnDisk = '0:0'
