// The cgroup layer: where the process's memory cgroup is, what limit applies to it, and how much
// memory it uses. Everything here reads files; nothing needs the native addon.

export { parseMountInfo, type MountInfoEntry } from './mountinfo.js'
export { parseProcCgroup, type ProcCgroupEntry } from './proc-cgroup.js'
export {
  cgroupOfPid,
  findMemoryCgroup,
  parentOf,
  resolveCgroupPath,
  type CgroupLocation,
  type CgroupVersion,
  type DiscoverOptions,
} from './discover.js'
export {
  effectiveLimit,
  pageSize,
  pageSizeFromAuxv,
  parseLimitValue,
  unlimitedV1,
  type EffectiveLimit,
  type LimitSource,
} from './limit.js'
export { memoryFigures, parseMemoryStat, readFigures, readUsage, type MemoryFigures } from './stat.js'
