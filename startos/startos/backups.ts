import { sdk } from './sdk'

/**
 * The whole data directory, models included: a model added from a file cannot be fetched
 * again, and rsync copies an unchanged model only once. Left out: model downloads still
 * under way (after a restore they start again from the beginning), and the CLNRest rune,
 * which lightning-access makes again at each start: a backup never carries a credential
 * that can pay.
 */
export const { createBackup, restoreInit } = sdk.setupBackups(async () =>
  sdk.Backups.withOptions({ exclude: ['models/*.gguf.part', 'lightning/*'] }).addVolume('main'),
)
