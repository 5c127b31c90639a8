import { sdk } from '../sdk'
import { chooseLightning } from './chooseLightning'
import { showSetupSecret } from './showSetupSecret'

export const actions = sdk.Actions.of()
  .addAction(chooseLightning)
  .addAction(showSetupSecret)
