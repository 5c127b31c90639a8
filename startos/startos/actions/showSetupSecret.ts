import { storeJson } from '../fileModels/store.json'
import { sdk } from '../sdk'

export const showSetupSecret = sdk.Action.withoutInput(
  'show-setup-secret',
  {
    name: 'Show setup secret',
    description:
      'The secret that makes you the owner: open the dashboard and paste it on the setup page. It works once, while the node has no owner.',
    warning: null,
    allowedStatuses: 'any',
    group: null,
    visibility: 'enabled',
  },
  async () => {
    const setupSecret = await storeJson.read((s) => s.setupSecret).once()
    if (!setupSecret) {
      throw new Error('No setup secret is stored: the install step did not finish')
    }
    return {
      version: '1',
      title: 'Setup secret',
      message:
        'Paste it on the dashboard’s setup page and sign in with your Nostr key to claim the node. Household members are invited from the dashboard afterwards.',
      result: {
        type: 'single',
        value: setupSecret,
        masked: true,
        copyable: true,
        qr: false,
      },
    }
  },
)
