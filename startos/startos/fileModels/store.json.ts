import { FileHelper, z } from '@start9labs/start-sdk'
import { sdk } from '../sdk'

export const lightningChoices = ['none', 'c-lightning'] as const
export type LightningChoice = (typeof lightningChoices)[number]

const shape = z.object({
  // SOVEREIGN_SECRET_KEY: Django's signing key (Sovereign refuses one under 32 characters).
  secretKey: z.string().catch(''),
  // SOVEREIGN_SETUP_SECRET: claims the node once, on its setup page.
  setupSecret: z.string().catch(''),
  // Which Lightning node pays for outside models; "none" leaves paying off.
  lightning: z.enum(lightningChoices).catch('none'),
})

export const storeJson = FileHelper.json(
  { base: sdk.volumes.main, subpath: '/store.json' },
  shape,
)
