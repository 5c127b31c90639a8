import { sdk } from './sdk'
import { uiHostId, uiInterfaceId, webPort } from './utils'

export const setInterfaces = sdk.setupInterfaces(async ({ effects }) => {
  const host = sdk.MultiHost.of(effects, uiHostId)
  // StartOS terminates TLS and adds X-Forwarded-* headers; Sovereign serves plain HTTP.
  const origin = await host.bindPort(webPort, { protocol: 'http' })

  const ui = sdk.createInterface(effects, {
    name: 'Dashboard',
    id: uiInterfaceId,
    description:
      'Chat, models, wallet, agents and members. Household members sign in with Nostr.',
    type: 'ui',
    masked: false,
    schemeOverride: null,
    username: null,
    path: '',
    query: {},
  })
  const api = sdk.createInterface(effects, {
    name: 'OpenAI-compatible API',
    id: 'api',
    description:
      'The base URL for programs that speak the OpenAI API; each member makes an API key in the dashboard.',
    type: 'api',
    masked: false,
    schemeOverride: null,
    username: null,
    path: '/v1',
    query: {},
  })

  return [await origin.export([ui, api])]
})
