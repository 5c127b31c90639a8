import { z } from '@start9labs/start-sdk'
import { webPort } from './utils'

/**
 * Sovereign's /healthz (apps/system/services.py, status_snapshot): 200 whenever the web
 * server answers, and each component's state in the body. "off" is a component this node
 * does not use (no Lightning node chosen).
 */
const componentShape = z.object({
  name: z.string(),
  label: z.string(),
  state: z.enum(['up', 'down', 'off']),
  detail: z.string(),
})
const healthzShape = z.object({
  ok: z.boolean(),
  components: z.array(componentShape),
})

export type Component = z.infer<typeof componentShape>
export type ComponentName = 'web' | 'worker' | 'broker' | 'engine' | 'lightning'

type Result = {
  result: 'success' | 'waiting' | 'failure' | 'disabled'
  message: string
}

const healthzUrl = `http://127.0.0.1:${webPort}/healthz`

/** The web server's report, or why there is none. */
export async function healthzRead(): Promise<
  { answered: true; components: Component[] } | { answered: false; reason: string }
> {
  try {
    const response = await fetch(healthzUrl, {
      signal: AbortSignal.timeout(4_000),
    })
    if (!response.ok) {
      return { answered: false, reason: `/healthz answered ${response.status}` }
    }
    const report = healthzShape.parse(await response.json())
    return { answered: true, components: report.components }
  } catch (error) {
    return { answered: false, reason: `/healthz did not answer: ${String(error)}` }
  }
}

/** The web daemon is ready when /healthz answers at all (a grace period covers its start). */
export async function webReady(): Promise<Result> {
  const report = await healthzRead()
  return report.answered
    ? { result: 'success', message: 'The dashboard is answering' }
    : { result: 'failure', message: report.reason }
}

/** One component's state, as the web server sees it. */
export async function componentReady(name: ComponentName): Promise<Result> {
  const report = await healthzRead()
  if (!report.answered) {
    return {
      result: 'waiting',
      message: `Waiting for the web server to report (${report.reason})`,
    }
  }
  const component = report.components.find((c) => c.name === name)
  if (!component) {
    return { result: 'failure', message: `/healthz does not report ${name}` }
  }
  const results = { up: 'success', down: 'failure', off: 'disabled' } as const
  return { result: results[component.state], message: component.detail }
}
