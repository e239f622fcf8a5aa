// memory-pressure: be told by the kernel before memory runs out, and give memory back first.

export { onMemoryThreshold, type OnMemoryThresholdOptions } from './threshold.js'
export {
  createMemoryMonitor,
  MemoryMonitor,
  type CloseEvent,
  type DirectionFilter,
  type MemoryMonitorOptions,
  type MonitorEvent,
  type MonitorEvents,
  type ThresholdEvent,
  type ThresholdOptions,
  type ThresholdSpec,
  type Unsubscribe,
} from './monitor.js'
export {
  CgroupV1Backend,
  SimulatedBackend,
  openBackend,
  type BackendChoice,
  type BackendCloseReason,
  type BackendEvents,
  type BackendName,
  type CgroupV1Options,
  type Crossing,
  type CrossingSignal,
  type Direction,
  type MemoryBackend,
  type MemorySnapshot,
  type OpenBackendOptions,
  type OpenedBackend,
  type ProbeResult,
  type SimulatedBackendOptions,
  type ThresholdPrecision,
  type ThresholdWatch,
} from './backends/index.js'
export { MemoryPressureError, type MemoryPressureErrorCode, type MemoryPressureErrorOptions } from './errors.js'
export {
  DEFAULT_LEVELS,
  ManualClock,
  PRESSURE_LEVELS,
  levelRank,
  reduceHeap,
  type Clock,
  type GcMethod,
  type HeapReduction,
  type LevelThresholds,
  type MallocTrimResult,
  type PolicyOptions,
  type PressureBasis,
  type PressureEvent,
  type PressureLevel,
  type ReduceHeapOptions,
  type ReliefEvent,
  type ShrinkReport,
  type ShrinkRequest,
  type Shrinker,
  type ShrinkerResult,
} from './policy/index.js'
export { nativeStatus, type NativeStatus } from './native.js'
export { formatBytes, parseThreshold, resolveThreshold, type ParsedThreshold, type Threshold } from './size.js'
export {
  cgroupOfPid,
  effectiveLimit,
  findMemoryCgroup,
  resolveCgroupPath,
  type CgroupLocation,
  type CgroupVersion,
  type EffectiveLimit,
} from './cgroup/index.js'
