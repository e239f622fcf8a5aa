// diagnostics_channel channels on which every monitor publishes what it sees, so tracing and APM
// tools observe memory pressure with no dependency on this package (`node:diagnostics_channel`).

import diagnosticsChannel from 'node:diagnostics_channel'
import type { OomEvent } from './backends/types.js'
import type { CloseEvent, MemoryMonitor, ThresholdEvent } from './monitor.js'
import type { PressureEvent, ReliefEvent } from './policy/engine.js'
import type { ShrinkReport } from './policy/shrinker.js'

/**
 * Names of the channels. Subscribe with `diagnostics_channel.subscribe(name, fn)`; each message is
 * `{ monitor, event }` (for `node-memory-pressure:monitor`, `{ monitor }` only), published
 * synchronously right after the monitor's own event of the same name.
 */
export const CHANNELS = {
  /** A monitor was created: `{ monitor }`. */
  monitor: 'node-memory-pressure:monitor',
  /** A threshold was crossed: `{ monitor, event: ThresholdEvent }`. */
  threshold: 'node-memory-pressure:threshold',
  /** The pressure level changed: `{ monitor, event: PressureEvent }`. */
  pressure: 'node-memory-pressure:pressure',
  /** Memory came back below moderate − hysteresis: `{ monitor, event: ReliefEvent }`. */
  relief: 'node-memory-pressure:relief',
  /** A shrink cycle finished: `{ monitor, event: ShrinkReport }`. */
  shrink: 'node-memory-pressure:shrink',
  /** The kernel reported an OOM in the watched cgroup: `{ monitor, event: OomEvent }`. */
  oom: 'node-memory-pressure:oom',
  /** The monitor closed: `{ monitor, event: CloseEvent }`. */
  close: 'node-memory-pressure:close',
} as const

/** The message published on `node-memory-pressure:monitor`. */
export interface MonitorCreatedMessage {
  monitor: MemoryMonitor
}

/** The message published on every other channel: the monitor and its event. */
export interface MonitorEventMessage<E> {
  monitor: MemoryMonitor
  event: E
}

/** The message type of each channel in {@link CHANNELS}. */
export interface ChannelMessages {
  monitor: MonitorCreatedMessage
  threshold: MonitorEventMessage<ThresholdEvent>
  pressure: MonitorEventMessage<PressureEvent>
  relief: MonitorEventMessage<ReliefEvent>
  shrink: MonitorEventMessage<ShrinkReport>
  oom: MonitorEventMessage<OomEvent>
  close: MonitorEventMessage<CloseEvent>
}

const created = diagnosticsChannel.channel(CHANNELS.monitor)
const forwarded = new Map<string, diagnosticsChannel.Channel>(
  (['threshold', 'pressure', 'relief', 'shrink', 'oom', 'close'] as const).map((name) => [name, diagnosticsChannel.channel(CHANNELS[name])]),
)

/**
 * Publishes a monitor's event on its channel, if the event has one and the channel has
 * subscribers (otherwise no message is built). Called by the monitor right after its listeners ran.
 */
export function publishEvent(monitor: MemoryMonitor, name: string, event: unknown): void {
  const channel = forwarded.get(name)
  if (channel?.hasSubscribers) channel.publish({ monitor, event })
}

/** Publishes `{ monitor }` on `node-memory-pressure:monitor`; called once the monitor is fully set up. */
export function announceMonitor(monitor: MemoryMonitor): void {
  if (created.hasSubscribers) created.publish({ monitor } satisfies MonitorCreatedMessage)
}
