import { sdk } from './sdk'

/**
 * The whole data directory, models included: a model added from a file cannot be fetched
 * again, and rsync copies an unchanged model only once. Left out: model downloads still
 * under way (after a restore they start again from the beginning).
 */
export const { createBackup, restoreInit } = sdk.setupBackups(async () =>
  sdk.Backups.withOptions({ exclude: ['models/*.gguf.part'] }).addVolume('main'),
)
