import { utils } from '@start9labs/start-sdk'
import { storeJson } from '../fileModels/store.json'
import { sdk } from '../sdk'

const alphanumeric = 'a-z,A-Z,0-9'

/**
 * The secrets are made once, at install, and kept in store.json (backed up with the data, so
 * a restored node keeps its sessions and its setup secret). Any other init only fills in
 * what is missing, which also repairs an install interrupted before this ran.
 */
export const seedFiles = sdk.setupOnInit(async (effects) => {
  const store = await storeJson.read().once()
  await storeJson.merge(effects, {
    // Sovereign refuses a key under 32 characters.
    secretKey: store?.secretKey || utils.getDefaultString({ charset: alphanumeric, len: 64 }),
    setupSecret: store?.setupSecret || utils.getDefaultString({ charset: alphanumeric, len: 24 }),
  })
})
