// The policy engine's public parts: levels, shrinkers, heap reduction and the clock.

export { ManualClock, systemClock, type Clock, type TimerHandle } from './clock.js'
export { PolicyEngine, type HeapLevelBytes, type LevelBytes, type PolicyHost, type PolicyOptions, type PressureEvent, type ReliefEvent } from './engine.js'
export { allocatorFreeBytes, reduceHeap, type GcMethod, type HeapReduction, type MallocTrimResult, type ReduceHeapOptions } from './heap.js'
export {
  DEFAULT_HYSTERESIS,
  DEFAULT_LEVELS,
  PRESSURE_LEVELS,
  basisOf,
  bytesToFree,
  levelFor,
  levelRank,
  resolveLevels,
  type LevelThresholds,
  type PressureBasis,
  type PressureLevel,
  type ResolvedLevels,
} from './levels.js'
export {
  DEFAULT_FRACTIONS,
  type HeapReading,
  type LimitKind,
  type LimitPlan,
  type ShrinkPlan,
  type ShrinkReport,
  type ShrinkRequest,
  type Shrinker,
  type ShrinkerResult,
} from './shrinker.js'
