import { chooseLightning } from '../actions/chooseLightning'
import { sdk } from '../sdk'

export const taskChooseLightning = sdk.setupOnInit(async (effects, kind) => {
  if (kind === 'install') {
    await sdk.action.createOwnTask(effects, chooseLightning, 'critical', {
      reason: 'Choose the Lightning node Sovereign pays with, or none.',
    })
  }
})
