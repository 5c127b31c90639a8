import { T } from '@start9labs/start-sdk'
import { ClnManifest, clnPackageId, clnrestHostId, clnrestPort } from './cln'
import { storeJson } from './fileModels/store.json'
import { componentReady, webReady } from './healthz'
import { sdk } from './sdk'
import {
  clnMountpoint,
  clnSocket,
  dataDir,
  lightningAccessDataDir,
  lightningDir,
  redisUrl,
  rootAsSovereign,
  runeFile,
  runeOwnerOnDisk,
  uiHostId,
  uiInterfaceId,
  valkeyPort,
  webPort,
} from './utils'

export const main = sdk.setupMain(async ({ effects }) => {
  const store = await storeJson.read().const(effects)
  if (!store?.secretKey || !store.setupSecret) {
    throw new Error('store.json holds no secrets: the install step did not finish')
  }
  const withLightning = store.lightning === clnPackageId
  const origins = await uiOrigins(effects)
  // Browsers reach Sovereign through StartOS's proxy on the LXC bridge: only that address
  // may name the client in X-Forwarded-For (per-address login limits count by it).
  const proxyAddress = await sdk.getOsIp(effects)

  // Every Sovereign process reads the same settings (sovereign/settings.py).
  const baseEnv = {
    SOVEREIGN_DATA_DIR: dataDir,
    SOVEREIGN_HOST: '0.0.0.0',
    SOVEREIGN_PORT: String(webPort),
    SOVEREIGN_SECRET_KEY: store.secretKey,
    SOVEREIGN_SETUP_SECRET: store.setupSecret,
    REDIS_URL: redisUrl,
    // 127.0.0.1 and localhost: the health checks below ask /healthz from inside.
    SOVEREIGN_ALLOWED_HOSTS: unique([
      ...origins.map((origin) => new URL(origin).hostname),
      '127.0.0.1',
      'localhost',
    ]).join(','),
    SOVEREIGN_CSRF_TRUSTED_ORIGINS: origins.join(','),
    SOVEREIGN_TRUSTED_PROXIES: proxyAddress,
    // StartOS terminates HTTPS and says so in X-Forwarded-Proto; absolute URLs (the API's
    // base URL, NIP-98 signed requests) must then be https:// as the browser sees them.
    SOVEREIGN_TRUST_FORWARDED_PROTO: 'true',
  }
  // The wallet's processes (web, worker) reach Core Lightning over CLNRest with a rune of
  // their own, never over its socket: no process that runs as uid 1000 sees its volume.
  const clnRest = withLightning ? await clnRestAddress(effects) : null
  const nodeEnv = clnRest
    ? {
        ...baseEnv,
        // Plain HTTP, as cln-startos serves CLNRest; no CA to pass.
        SOVEREIGN_LIGHTNING_REST_URL: `http://${clnRest}`,
        SOVEREIGN_LIGHTNING_RUNE_FILE: runeFile,
      }
    : baseEnv

  const dataMounts = sdk.Mounts.of().mountVolume({
    volumeId: 'main',
    subpath: null,
    mountpoint: dataDir,
    readonly: false,
    idmap: rootAsSovereign,
  })
  // lightning-access alone sees Core Lightning's volume, read-only and as it is on disk (root's,
  // the socket 0600): it runs as root, the only way to open that socket without showing the
  // seed (bitcoin/hsm_secret) to anyone else. It sees Sovereign's volume without the id map
  // too: through rootAsSovereign, root (uid 0 in the mount) maps to no id on disk and could
  // create nothing there. See runeOwnerOnDisk for whose the rune is.
  const accessMounts = sdk.Mounts.of()
    .mountVolume({
      volumeId: 'main',
      subpath: null,
      mountpoint: dataDir,
      readonly: false,
    })
    .mountDependency<ClnManifest>({
      dependencyId: clnPackageId,
      volumeId: 'main',
      subpath: null,
      mountpoint: clnMountpoint,
      readonly: true,
    })

  const webSub = sdk.SubContainer.of(effects, { imageId: 'main' }, dataMounts, 'web')
  const valkeySub = sdk.SubContainer.of(effects, { imageId: 'valkey' }, null, 'valkey')

  return sdk.Daemons.of(effects)
    .addDaemon('valkey', {
      subcontainer: valkeySub,
      // No disk: what Sovereign must not lose is in its database. A task queued when the
      // service stops is taken up again by the worker's periodic sweeps (payments
      // reconciled, agent steps resumed, model downloads restarted).
      exec: {
        command: [
          'valkey-server',
          '--bind', '127.0.0.1',
          '--port', String(valkeyPort),
          '--save', '',
          '--appendonly', 'no',
        ],
      },
      ready: {
        display: null,
        fn: async () => {
          const answer = await valkeySub.exec(['valkey-cli', '-p', String(valkeyPort), 'ping'])
          return String(answer.stdout).trim() === 'PONG'
            ? { result: 'success', message: 'Valkey answers' }
            : { result: 'starting', message: 'Valkey is not answering yet' }
        },
      },
      requires: [],
    })
    // The rune web and worker pay with, made (or kept) over the node's socket at each start,
    // as Umbrel's lightning-access container does: restricted to the methods the wallet calls.
    // --optional: a node that does not answer within 300 s is no error; Sovereign starts and
    // shows the node down. Django starts on a throwaway data directory (lightningAccessDataDir).
    .addOneshot('lightning-access', () =>
      withLightning
        ? {
            subcontainer: sdk.SubContainer.of(
              effects,
              { imageId: 'main' },
              accessMounts,
              'lightning-access',
            ),
            exec: {
              command: [
                'python', 'manage.py', 'wallet', 'rune',
                // No --ca: CLNRest is plain HTTP on StartOS's internal network.
                '--socket', clnSocket,
                '--to', lightningDir,
                '--owner', runeOwnerOnDisk,
                '--optional',
              ],
              env: {
                SOVEREIGN_DATA_DIR: lightningAccessDataDir,
                SOVEREIGN_SECRET_KEY: store.secretKey,
              },
              user: 'root',
            },
            requires: [],
          }
        : null,
    )
    // `manage.py run web` migrates again when it starts (a no-op by then); running it here
    // first keeps the worker and the engine from starting on an old schema.
    .addOneshot('migrate', {
      subcontainer: webSub,
      exec: {
        command: ['python', 'manage.py', 'migrate', '--noinput'],
        env: nodeEnv,
      },
      requires: [],
    })
    .addDaemon('web', {
      subcontainer: webSub,
      exec: {
        command: ['python', 'manage.py', 'run', 'web'],
        env: nodeEnv,
        sigtermTimeout: 60_000,
      },
      ready: {
        display: 'Web interface',
        // collectstatic and the model catalog run before it listens.
        gracePeriod: 120_000,
        fn: webReady,
      },
      requires: withLightning ? ['migrate', 'valkey', 'lightning-access'] : ['migrate', 'valkey'],
    })
    .addDaemon('worker', {
      subcontainer: sdk.SubContainer.of(effects, { imageId: 'main' }, dataMounts, 'worker'),
      exec: {
        command: ['python', 'manage.py', 'run', 'worker'],
        env: nodeEnv,
        sigtermTimeout: 60_000,
      },
      ready: {
        display: 'Worker',
        gracePeriod: 120_000,
        fn: () => componentReady('worker'),
      },
      requires: withLightning ? ['migrate', 'valkey', 'lightning-access'] : ['migrate', 'valkey'],
    })
    .addDaemon('engine', {
      // The model runtime: its crash or out-of-memory ends this daemon only, and StartOS
      // starts it again. It never sees the Lightning node's files.
      subcontainer: sdk.SubContainer.of(effects, { imageId: 'main' }, dataMounts, 'engine'),
      exec: {
        command: ['python', 'manage.py', 'run', 'engine'],
        env: baseEnv,
        sigtermTimeout: 60_000,
      },
      ready: {
        display: 'Model engine',
        gracePeriod: 120_000,
        fn: () => componentReady('engine'),
      },
      requires: ['migrate'],
    })
    .addHealthCheck('lightning', {
      ready: {
        display: 'Lightning node',
        fn: () => componentReady('lightning'),
      },
      requires: ['web'],
    })
})

/**
 * CLNRest's `host:port` on the LXC bridge, or null while Core Lightning has no CLNRest host
 * (not installed yet, or CLNRest turned off): Sovereign then starts without a node and shows
 * it off. `.const()` restarts Sovereign when the address appears or changes.
 */
async function clnRestAddress(effects: T.Effects): Promise<string | null> {
  return sdk.host
    .getBridgeAddress(effects, {
      packageId: clnPackageId,
      hostId: clnrestHostId,
      internalPort: clnrestPort,
      ssl: false,
    })
    .const()
}

/** The origins (scheme://host:port) browsers open the UI at: CSRF checks trust only these. */
async function uiOrigins(effects: T.Effects): Promise<string[]> {
  const urls = await sdk.host
    .getOwn(effects, uiHostId, (host) =>
      (
        host?.bindings[webPort]?.interfaces[uiInterfaceId]?.addressInfo
          // A link-local address needs a zone, which neither URLs nor Django accept.
          .filter({ exclude: { kind: 'link-local' } })
          .format() ?? []
      ).sort(),
    )
    .const()
  return unique(urls.map(webOrigin).filter((origin) => origin !== null))
}

/** The origin of an http(s) URL; null for anything else (Sovereign refuses it at start). */
function webOrigin(url: string): string | null {
  try {
    const parsed = new URL(url)
    return ['http:', 'https:'].includes(parsed.protocol) ? parsed.origin : null
  } catch {
    return null
  }
}

function unique(values: string[]): string[] {
  return [...new Set(values)]
}

