import { setupManifest } from '@start9labs/start-sdk'
import { clnDependencyDescription, long, short } from './i18n'

export const manifest = setupManifest({
  id: 'sovereign',
  title: 'Sovereign',
  // The project has not chosen its license yet: see LICENSE beside package.json.
  license: 'UNLICENSED',
  packageRepo: 'https://github.com/sovereign-node/sovereign/tree/main/startos',
  upstreamRepo: 'https://github.com/sovereign-node/sovereign',
  marketingUrl: 'https://github.com/sovereign-node/sovereign',
  donationUrl: null,
  description: { short, long },
  volumes: ['main'],
  images: {
    // The release step rewrites this tag to <tag>@sha256:<multi-arch digest>.
    main: {
      source: { dockerTag: 'ghcr.io/sovereign-node/sovereign:0.1.0' },
      arch: ['x86_64', 'aarch64'],
    },
    // Celery's broker and the channel layer for live events, on localhost only.
    valkey: {
      source: { dockerTag: 'valkey/valkey:8.1.10-alpine' },
      arch: ['x86_64', 'aarch64'],
    },
  },
  dependencies: {
    'c-lightning': {
      description: clnDependencyDescription,
      optional: true,
      metadata: {
        title: 'Core Lightning',
        icon: 'https://raw.githubusercontent.com/Start9Labs/cln-startos/refs/heads/master/icon.svg',
      },
    },
  },
})
