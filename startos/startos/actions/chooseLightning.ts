import { storeJson } from '../fileModels/store.json'
import { sdk } from '../sdk'

const { InputSpec, Value } = sdk

const inputSpec = InputSpec.of({
  lightning: Value.select({
    name: 'Lightning node',
    description:
      'The node that pays outside models and receives payments. Sovereign talks to it over CLNRest (keep CLNRest on in Core Lightning\'s Plugins), with a rune of its own that allows only the calls its wallet makes.',
    values: {
      'c-lightning': 'Core Lightning',
      none: 'None: paying is off, everything else works',
    },
    default: 'c-lightning',
  }),
})

export const chooseLightning = sdk.Action.withInput(
  'choose-lightning',
  {
    name: 'Choose Lightning node',
    description: 'Choose the Lightning node Sovereign pays with, or none.',
    warning: 'Switch only while no payment is under way.',
    allowedStatuses: 'any',
    group: null,
    visibility: 'enabled',
  },
  inputSpec,
  async () => ({
    lightning: (await storeJson.read((s) => s.lightning).once()) ?? 'c-lightning',
  }),
  // main and the dependencies read the choice reactively: saving it restarts Sovereign
  // with (or without) the lightning-access oneshot and CLNRest's address.
  async ({ effects, input }) => {
    await storeJson.merge(effects, { lightning: input.lightning })
  },
)
