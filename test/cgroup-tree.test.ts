// Discovery, path resolution, effective limits and figures on fake cgroup trees: real files in a
// temp dir, "mounted" by a mountinfo written for the test or rebased from a host fixture.

import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import {
  effectiveLimit,
  findMemoryCgroup,
  parentOf,
  readFigures,
  readUsage,
  resolveCgroupPath,
  type CgroupLocation,
} from '../src/cgroup/index.js'
import { MemoryPressureError } from '../src/errors.js'

const hosts = fileURLToPath(new URL('./fixtures/hosts/', import.meta.url))
const fixture = (host: string, file: string): string => readFileSync(`${hosts}${host}/${file}`, 'utf8')
const GiB = 1024 ** 3
const MiB = 1024 ** 2
const UNLIMITED_V1 = '9223372036854771712\n'

const podSlice = 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f1c2b4a_5d6e_4f70_8a9b_0c1d2e3f4a5b.slice'
const container = `${podSlice}/cri-containerd-19a5c34d18665e9b710570a2487b57e4ea4661ebe0c0117b2e3636b88d56f098.scope`

const temps: string[] = []
afterEach(() => {
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** A fresh temp dir (resolved, so that it matches what realpath returns). */
function tempRoot(): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'cgroup-test-')))
  temps.push(dir)
  return dir
}

/** Writes files (`null` makes a directory) under `root`. */
function build(root: string, spec: Record<string, string | null>): void {
  for (const [rel, content] of Object.entries(spec)) {
    const path = join(root, rel)
    if (content === null) {
      mkdirSync(path, { recursive: true })
    } else {
      mkdirSync(dirname(path), { recursive: true })
      writeFileSync(path, content)
    }
  }
}

const esc = (path: string): string => path.replace(/\\/g, '\\134').replace(/ /g, '\\040')

/** One mountinfo line. */
function mount(id: number, root: string, mountPoint: string, fsType: string, superOptions: string): string {
  const source = fsType === 'cgroup2' ? 'cgroup2' : fsType === 'cgroup' ? 'cgroup' : '/dev/vda'
  return `${id} 1 0:${id} ${esc(root)} ${esc(mountPoint)} rw,nosuid,nodev,noexec,relatime shared:${id} - ${fsType} ${source} ${superOptions}`
}

/** A proc dir holding `mountinfo` and `cgroup`. */
function procDir(root: string, mountinfo: string[] | string, cgroup: string[] | string): string {
  const dir = join(root, 'proc')
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'mountinfo'), (Array.isArray(mountinfo) ? mountinfo.join('\n') : mountinfo) + '\n')
  writeFileSync(join(dir, 'cgroup'), (Array.isArray(cgroup) ? cgroup.join('\n') : cgroup) + '\n')
  return dir
}

/** A host fixture's mountinfo with every mount point moved under `root`. */
function rebase(mountinfo: string, root: string): string {
  return mountinfo.trim().split('\n').map((line) => {
    const fields = line.split(' ')
    fields[4] = esc(root) + (fields[4] === '/' ? '' : fields[4])
    return fields.join(' ')
  }).join('\n')
}

function errorOf(fn: () => unknown): MemoryPressureError {
  try {
    fn()
  } catch (err) {
    if (err instanceof MemoryPressureError) return err
    throw err
  }
  throw new Error('expected a MemoryPressureError, nothing was thrown')
}

describe('findMemoryCgroup on host fixtures', () => {
  it('docker-v1: the container\'s memory cgroup is the mount point itself (root /docker/<id>)', () => {
    const root = tempRoot()
    const memory = `${root}/sys/fs/cgroup/memory`
    build(root, {
      'sys/fs/cgroup/memory/memory.limit_in_bytes': '536870912\n',
      'sys/fs/cgroup/memory/memory.usage_in_bytes': '229957632\n',
      'sys/fs/cgroup/memory/memory.stat': fixture('docker-v1', 'memory.stat'),
      'sys/fs/cgroup/unified': null,
    })
    const proc = procDir(root, rebase(fixture('docker-v1', 'mountinfo'), root), fixture('docker-v1', 'cgroup').trim())
    const loc = findMemoryCgroup({ procDir: proc })
    expect(loc).toEqual({
      version: 1,
      path: memory,
      mountPoint: memory,
      relativePath: '/docker/23c70359c0511abf8a8d316fe9e9558a0fa32b535851966a6d886fd6045d17f9',
    })
    expect(parentOf(loc)).toBeNull()
    expect(effectiveLimit(loc)).toEqual({ limit: 512 * MiB, holder: memory, source: 'memory.limit_in_bytes' })
    expect(readFigures(loc)).toEqual({
      usage: 229957632, rss: 201285632, cache: 28672000, inactiveFile: 17338368, workingSet: 229957632 - 17338368,
    })
  })

  it('docker-v2-cgroupns: path 0::/ maps to the cgroup2 mount point', () => {
    const root = tempRoot()
    build(root, {
      'sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
      'sys/fs/cgroup/memory.current': '265490432\n',
      'sys/fs/cgroup/memory.max': '1073741824\n',
      'sys/fs/cgroup/memory.high': 'max\n',
      'sys/fs/cgroup/memory.stat': fixture('docker-v2-cgroupns', 'memory.stat'),
    })
    const proc = procDir(root, rebase(fixture('docker-v2-cgroupns', 'mountinfo'), root), fixture('docker-v2-cgroupns', 'cgroup').trim())
    const loc = findMemoryCgroup({ procDir: proc })
    expect(loc).toEqual({ version: 2, path: `${root}/sys/fs/cgroup`, mountPoint: `${root}/sys/fs/cgroup`, relativePath: '/' })
    expect(effectiveLimit(loc)).toEqual({ limit: GiB, holder: `${root}/sys/fs/cgroup`, source: 'memory.max' })
    expect(readFigures(loc)).toMatchObject({ usage: 265490432, rss: 61234 * 4096, workingSet: 265490432 - 6011 * 4096 })
  })

  it('docker-v2-cgroupns: memory not in cgroup.controllers is ERR_NO_CGROUP with a reason per check', () => {
    const root = tempRoot()
    build(root, {
      'sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io pids\n',
      'sys/fs/cgroup/memory.current': '1\n',
    })
    const proc = procDir(root, rebase(fixture('docker-v2-cgroupns', 'mountinfo'), root), '0::/')
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    // v1: no memory line, no memory mount; v2: controller not enabled
    expect(err.reasons).toHaveLength(3)
    expect(err.path).toBe(join(proc, 'cgroup'))
  })

  it('the real v2 root (no namespace) has no memory.current and is rejected', () => {
    const root = tempRoot()
    build(root, { 'v2/cgroup.controllers': 'cpu io memory pids\n', 'v2/memory.stat': 'anon 0\n' })
    const proc = procDir(root, [mount(11, '/', `${root}/v2`, 'cgroup2', 'rw')], '0::/')
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    expect(err.reasons).toHaveLength(3)
  })

  it('docker-v2-cgroupns: decides by memory.current when cgroup.controllers is absent', () => {
    const root = tempRoot()
    build(root, { 'sys/fs/cgroup/memory.current': '1\n' })
    const proc = procDir(root, rebase(fixture('docker-v2-cgroupns', 'mountinfo'), root), '0::/')
    expect(findMemoryCgroup({ procDir: proc }).version).toBe(2)
    rmSync(`${root}/sys/fs/cgroup/memory.current`)
    expect(errorOf(() => findMemoryCgroup({ procDir: proc })).code).toBe('ERR_NO_CGROUP')
  })

  function k8sTree(root: string): void {
    const cg = 'sys/fs/cgroup'
    build(root, {
      [`${cg}/cgroup.controllers`]: 'cpuset cpu io memory hugetlb pids rdma misc\n',
      [`${cg}/memory.stat`]: 'anon 1\nfile 1\ninactive_file 1\n',
      [`${cg}/kubepods.slice/memory.max`]: '15899787264\n',
      [`${cg}/kubepods.slice/memory.high`]: 'max\n',
      [`${cg}/kubepods.slice/kubepods-burstable.slice/memory.max`]: 'max\n',
      [`${cg}/kubepods.slice/kubepods-burstable.slice/memory.high`]: 'max\n',
      [`${cg}/${podSlice}/memory.max`]: '268435456\n',
      [`${cg}/${podSlice}/memory.high`]: 'max\n',
      [`${cg}/${container}/cgroup.controllers`]: 'cpuset cpu io memory hugetlb pids rdma misc\n',
      [`${cg}/${container}/memory.max`]: 'max\n',
      [`${cg}/${container}/memory.high`]: 'max\n',
      [`${cg}/${container}/memory.current`]: '467296256\n',
      [`${cg}/${container}/memory.stat`]: fixture('k8s-v2', 'memory.stat'),
    })
  }

  it('k8s-v2: the container scope deep in kubepods.slice; the limit is on the pod slice', () => {
    const root = tempRoot()
    k8sTree(root)
    const proc = procDir(root, rebase(fixture('k8s-v2', 'mountinfo'), root), fixture('k8s-v2', 'cgroup').trim())
    const loc = findMemoryCgroup({ procDir: proc })
    expect(loc).toEqual({
      version: 2,
      path: `${root}/sys/fs/cgroup/${container}`,
      mountPoint: `${root}/sys/fs/cgroup`,
      relativePath: `/${container}`,
    })
    expect(effectiveLimit(loc)).toEqual({ limit: 268435456, holder: `${root}/sys/fs/cgroup/${podSlice}`, source: 'memory.max' })
    expect(readFigures(loc)).toEqual({
      usage: 467296256,
      rss: 98304 * 4096,
      cache: 20480 * 4096,
      inactiveFile: 13100 * 4096,
      workingSet: 467296256 - 13100 * 4096,
    })
  })

  it('k8s-v2: parentOf walks up to the mount point and stops', () => {
    const root = tempRoot()
    k8sTree(root)
    const proc = procDir(root, rebase(fixture('k8s-v2', 'mountinfo'), root), fixture('k8s-v2', 'cgroup').trim())
    const chain: string[] = []
    for (let loc: CgroupLocation | null = findMemoryCgroup({ procDir: proc }); loc !== null; loc = parentOf(loc)) {
      chain.push(loc.relativePath)
      expect(loc.path).toBe(`${root}/sys/fs/cgroup${loc.relativePath === '/' ? '' : loc.relativePath}`)
    }
    expect(chain).toEqual([
      `/${container}`,
      `/${podSlice}`,
      '/kubepods.slice/kubepods-burstable.slice',
      '/kubepods.slice',
      '/',
    ])
  })

  it('systemd-hybrid: v1 memory wins over the unified v2 tree that lacks memory', () => {
    const root = tempRoot()
    const service = 'user.slice/user-1000.slice/user@1000.service'
    build(root, {
      [`sys/fs/cgroup/memory/${service}/memory.usage_in_bytes`]: '1\n',
      'sys/fs/cgroup/unified/cgroup.controllers': '\n',
      'sys/fs/cgroup/unified/user.slice/user-1000.slice/user@1000.service/gnome-terminal-server.service/cgroup.controllers': '\n',
    })
    const proc = procDir(root, rebase(fixture('systemd-hybrid', 'mountinfo'), root), fixture('systemd-hybrid', 'cgroup').trim())
    expect(findMemoryCgroup({ procDir: proc })).toEqual({
      version: 1,
      path: `${root}/sys/fs/cgroup/memory/${service}`,
      mountPoint: `${root}/sys/fs/cgroup/memory`,
      relativePath: `/${service}`,
    })
  })

  it('this-machine: the v1 memory line maps under the memory mount', () => {
    const root = tempRoot()
    const rel = '/process_api/20f65afaa5dffb637b7b379a3f55e882'
    build(root, { [`sys/fs/cgroup/memory${rel}`]: null, 'sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb\n' })
    const proc = procDir(root, rebase(fixture('this-machine', 'mountinfo'), root), fixture('this-machine', 'cgroup').trim())
    expect(findMemoryCgroup({ procDir: proc })).toEqual({
      version: 1, path: `${root}/sys/fs/cgroup/memory${rel}`, mountPoint: `${root}/sys/fs/cgroup/memory`, relativePath: rel,
    })
  })

  it('this-machine: without the v1 memory directory, the v2 tree without memory is rejected too', () => {
    const root = tempRoot()
    build(root, { 'sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb\n' })
    const proc = procDir(root, rebase(fixture('this-machine', 'mountinfo'), root), fixture('this-machine', 'cgroup').trim())
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    expect(err.reasons).toHaveLength(2)
  })
})

describe('findMemoryCgroup on files captured from a real cgroup v2 kernel (6.1, in a VM)', () => {
  it('vm-v2: a k8s-shaped tree; limit on the pod slice, figures from the captured files', () => {
    const root = tempRoot()
    const cg = 'sys/fs/cgroup'
    build(root, {
      [`${cg}/cgroup.controllers`]: 'cpuset cpu io memory hugetlb pids rdma misc\n',
      [`${cg}/kubepods.slice/memory.max`]: '15899787264\n',
      [`${cg}/kubepods.slice/memory.high`]: 'max\n',
      [`${cg}/kubepods.slice/kubepods-burstable.slice/memory.max`]: 'max\n',
      [`${cg}/kubepods.slice/kubepods-burstable.slice/memory.high`]: 'max\n',
      [`${cg}/${podSlice}/memory.max`]: '268435456\n',
      [`${cg}/${podSlice}/memory.high`]: 'max\n',
      [`${cg}/${container}/cgroup.controllers`]: 'memory pids\n',
      [`${cg}/${container}/memory.high`]: 'max\n',
      [`${cg}/${container}/memory.max`]: fixture('vm-v2', 'memory.max'),
      [`${cg}/${container}/memory.current`]: fixture('vm-v2', 'memory.current'),
      [`${cg}/${container}/memory.stat`]: fixture('vm-v2', 'memory.stat'),
    })
    const proc = procDir(root, rebase(fixture('vm-v2', 'mountinfo'), root), fixture('vm-v2', 'cgroup').trim())
    const loc = findMemoryCgroup({ procDir: proc })
    expect(loc).toEqual({ version: 2, path: `${root}/${cg}/${container}`, mountPoint: `${root}/${cg}`, relativePath: `/${container}` })
    expect(effectiveLimit(loc)).toEqual({ limit: 268435456, holder: `${root}/${cg}/${podSlice}`, source: 'memory.max' })
    expect(readFigures(loc)).toEqual({
      usage: 112316416, rss: 59682816, cache: 50360320, inactiveFile: 50335744, workingSet: 112316416 - 50335744,
    })
  })

  it('vm-v2-cgroupns: a fresh cgroup2 mount inside the namespace is the container itself; the pod limit above it is not visible', () => {
    const root = tempRoot()
    build(root, {
      'sys/fs/cgroup/cgroup.controllers': 'memory pids\n',
      'sys/fs/cgroup/memory.high': 'max\n',
      'sys/fs/cgroup/memory.max': fixture('vm-v2-cgroupns', 'memory.max'),
      'sys/fs/cgroup/memory.current': fixture('vm-v2-cgroupns', 'memory.current'),
      'sys/fs/cgroup/memory.stat': fixture('vm-v2-cgroupns', 'memory.stat'),
    })
    const proc = procDir(root, rebase(fixture('vm-v2-cgroupns', 'mountinfo'), root), fixture('vm-v2-cgroupns', 'cgroup').trim())
    const loc = findMemoryCgroup({ procDir: proc })
    expect(loc).toEqual({ version: 2, path: `${root}/sys/fs/cgroup`, mountPoint: `${root}/sys/fs/cgroup`, relativePath: '/' })
    expect(effectiveLimit(loc)).toEqual({ limit: Infinity, holder: null, source: null })
    expect(readFigures(loc).usage).toBe(112128000)
  })

  it('vm-v2-cgroupns-inherited: a mount from outside the namespace (root /../../../..) is ERR_NO_CGROUP', () => {
    const root = tempRoot()
    build(root, { 'sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n' })
    const proc = procDir(root, rebase(fixture('vm-v2-cgroupns-inherited', 'mountinfo'), root),
      fixture('vm-v2-cgroupns-inherited', 'cgroup').trim())
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    expect(err.reasons).toHaveLength(3)
  })
})

describe('findMemoryCgroup: mapping hierarchy paths to directories', () => {
  it('picks the mount whose root contains the path, longest root first', () => {
    const root = tempRoot()
    build(root, { 'all/docker/abc/x': null, 'ctr/x': null, 'other/x': null })
    const proc = procDir(root, [
      mount(10, '/', `${root}/all`, 'cgroup', 'rw,memory'),
      mount(11, '/docker/abc', `${root}/ctr`, 'cgroup', 'rw,memory'),
      mount(12, '/docker/ab', `${root}/other`, 'cgroup', 'rw,memory'),
    ], '5:memory:/docker/abc/x')
    expect(findMemoryCgroup({ procDir: proc })).toEqual({
      version: 1, path: `${root}/ctr/x`, mountPoint: `${root}/ctr`, relativePath: '/docker/abc/x',
    })
  })

  it('compares whole path segments: root /docker/ab does not contain /docker/abc', () => {
    const root = tempRoot()
    build(root, { 'ctr/c': null })
    const proc = procDir(root, [mount(10, '/docker/ab', `${root}/ctr`, 'cgroup', 'rw,memory')], '5:memory:/docker/abc')
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    expect(err.reasons).toHaveLength(3)
  })

  it('a cgroup outside the namespace root (/../x) is ERR_NO_CGROUP, not the mount\'s parent', () => {
    const root = tempRoot()
    build(root, { 'cg/x': null, x: null })
    const proc = procDir(root, [mount(10, '/', `${root}/cg`, 'cgroup2', 'rw,nsdelegate')], '0::/../x')
    build(root, { 'cg/cgroup.controllers': 'memory\n', 'x/cgroup.controllers': 'memory\n' })
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    // v1: no line, no mount; v2: outside the mount root
    expect(err.reasons).toHaveLength(3)
  })

  it('a mount whose root is itself outside the namespace (/..) maps /../x below it', () => {
    const root = tempRoot()
    build(root, { 'outer/x/cgroup.controllers': 'cpu memory\n', 'outer/x/memory.current': '0\n' })
    const proc = procDir(root, [mount(10, '/..', `${root}/outer`, 'cgroup2', 'rw')], '0::/../x')
    expect(findMemoryCgroup({ procDir: proc })).toEqual({
      version: 2, path: `${root}/outer/x`, mountPoint: `${root}/outer`, relativePath: '/../x',
    })
  })

  it('a mapped directory that does not exist is rejected', () => {
    const root = tempRoot()
    build(root, { mem: null })
    const proc = procDir(root, [mount(10, '/', `${root}/mem`, 'cgroup', 'rw,memory')], '5:memory:/gone')
    expect(errorOf(() => findMemoryCgroup({ procDir: proc })).code).toBe('ERR_NO_CGROUP')
  })

  it('falls back to v2 when the memory line exists but no v1 memory hierarchy is mounted', () => {
    const root = tempRoot()
    build(root, { 'v2/app/cgroup.controllers': 'memory pids\n', 'v2/app/memory.current': '0\n' })
    const proc = procDir(root, [
      mount(10, '/', `${root}/cpu`, 'cgroup', 'rw,cpu,cpuacct'),
      mount(11, '/', `${root}/v2`, 'cgroup2', 'rw'),
    ], ['4:memory:/app', '0::/app'])
    expect(findMemoryCgroup({ procDir: proc })).toMatchObject({ version: 2, path: `${root}/v2/app` })
  })

  it('prefers v1 when both v1 memory and v2 with memory qualify', () => {
    const root = tempRoot()
    build(root, { 'mem/app': null, 'v2/app/cgroup.controllers': 'memory\n' })
    const proc = procDir(root, [
      mount(10, '/', `${root}/mem`, 'cgroup', 'rw,memory'),
      mount(11, '/', `${root}/v2`, 'cgroup2', 'rw'),
    ], ['4:memory:/app', '0::/app'])
    expect(findMemoryCgroup({ procDir: proc })).toMatchObject({ version: 1, path: `${root}/mem/app` })
  })

  it('a missing proc dir is ERR_NO_CGROUP; a malformed file is ERR_PARSE with its path', () => {
    const root = tempRoot()
    expect(errorOf(() => findMemoryCgroup({ procDir: `${root}/nope` })).code).toBe('ERR_NO_CGROUP')
    const proc = procDir(root, ['not a mountinfo line'], '0::/')
    const err = errorOf(() => findMemoryCgroup({ procDir: proc }))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe(join(proc, 'mountinfo'))
  })

  it('validates its options', () => {
    expect(() => findMemoryCgroup({ pid: -1 })).toThrow(RangeError)
    expect(() => findMemoryCgroup({ pid: 1.5 })).toThrow(RangeError)
    expect(() => findMemoryCgroup({ pid: 1, procDir: '/proc/1' })).toThrow(TypeError)
    expect(() => findMemoryCgroup({ procDir: '' })).toThrow(TypeError)
  })
})

describe('resolveCgroupPath', () => {
  function setup(v1Root = '/'): { root: string; proc: string } {
    const root = tempRoot()
    build(root, {
      'mem/a/b/memory.usage_in_bytes': '1\n',
      'mem/a/memory.usage_in_bytes': '1\n',
      'mem/memory.usage_in_bytes': '1\n',
      'v2/pod/ctr/memory.current': '1\n',
      'v2/pod/memory.current': '1\n',
      'v2/cgroup.controllers': 'memory\n',
      'cpu/a/cpu.shares': '1024\n',
      'plain/memory.usage_in_bytes': '1\n',
    })
    const proc = procDir(root, [
      '1 0 254:0 / / rw,relatime - ext4 /dev/vda rw',
      mount(10, v1Root, `${root}/mem`, 'cgroup', 'rw,memory'),
      mount(11, '/', `${root}/v2`, 'cgroup2', 'rw,nsdelegate'),
      mount(12, '/', `${root}/cpu`, 'cgroup', 'rw,cpu,cpuacct'),
    ], '0::/')
    return { root, proc }
  }

  it('accepts a v1 memory cgroup and computes its hierarchy path', () => {
    const { root, proc } = setup()
    expect(resolveCgroupPath(`${root}/mem/a/b`, { procDir: proc })).toEqual({
      version: 1, path: `${root}/mem/a/b`, mountPoint: `${root}/mem`, relativePath: '/a/b',
    })
    expect(resolveCgroupPath(`${root}/mem/`, { procDir: proc }).relativePath).toBe('/')
  })

  it('prefixes the mount root to the hierarchy path', () => {
    const { root, proc } = setup('/docker/abc')
    expect(resolveCgroupPath(`${root}/mem/a`, { procDir: proc }).relativePath).toBe('/docker/abc/a')
    expect(resolveCgroupPath(`${root}/mem`, { procDir: proc }).relativePath).toBe('/docker/abc')
  })

  it('accepts a v2 cgroup with memory.current, resolving .. inside the mount', () => {
    const { root, proc } = setup()
    expect(resolveCgroupPath(`${root}/v2/pod/ctr/../ctr`, { procDir: proc })).toEqual({
      version: 2, path: `${root}/v2/pod/ctr`, mountPoint: `${root}/v2`, relativePath: '/pod/ctr',
    })
  })

  it('follows a symlink that stays inside the mount', () => {
    const { root, proc } = setup()
    symlinkSync(`${root}/mem/a/b`, `${root}/mem/link`)
    expect(resolveCgroupPath(`${root}/mem/link`, { procDir: proc }).path).toBe(`${root}/mem/a/b`)
  })

  it.each([
    ['.. escaping the mount', (root: string) => `${root}/mem/a/../../plain`],
    ['a symlink pointing outside', (root: string) => {
      symlinkSync(`${root}/plain`, `${root}/mem/a/escape`)
      return `${root}/mem/a/escape`
    }],
    ['a file', (root: string) => `${root}/mem/a/memory.usage_in_bytes`],
    ['a non-existent path', (root: string) => `${root}/mem/a/nope`],
    ['a path below a file', (root: string) => `${root}/mem/a/memory.usage_in_bytes/x`],
    ['a v1 hierarchy without memory', (root: string) => `${root}/cpu/a`],
    ['a v2 cgroup without memory.current (the v2 root)', (root: string) => `${root}/v2`],
  ])('rejects %s with ERR_NO_CGROUP and the given path', (_name, make) => {
    const { root, proc } = setup()
    const path = make(root)
    const err = errorOf(() => resolveCgroupPath(path, { procDir: proc }))
    expect(err.code).toBe('ERR_NO_CGROUP')
    expect(err.path).toBe(path)
    expect(err.reasons).toHaveLength(1)
  })

  it('a mount over a cgroup directory hides it', () => {
    const { root } = setup()
    const proc = procDir(root, [
      mount(10, '/', `${root}/mem`, 'cgroup', 'rw,memory'),
      `13 10 0:99 / ${root}/mem/a rw - tmpfs tmpfs rw`,
    ], '0::/')
    expect(errorOf(() => resolveCgroupPath(`${root}/mem/a/b`, { procDir: proc })).code).toBe('ERR_NO_CGROUP')
    expect(resolveCgroupPath(`${root}/mem`, { procDir: proc }).version).toBe(1)
  })

  it('of two mounts at the same mount point, the later one (mounted on top) counts', () => {
    const { root } = setup()
    const tmpfsOnTop = procDir(root, [
      mount(10, '/', `${root}/mem`, 'cgroup', 'rw,memory'),
      `13 10 0:99 / ${root}/mem rw - tmpfs tmpfs rw`,
    ], '0::/')
    expect(errorOf(() => resolveCgroupPath(`${root}/mem/a`, { procDir: tmpfsOnTop })).code).toBe('ERR_NO_CGROUP')
    const cgroupOnTop = procDir(root, [
      `13 1 0:99 / ${root}/mem rw - tmpfs tmpfs rw`,
      mount(10, '/', `${root}/mem`, 'cgroup', 'rw,memory'),
    ], '0::/')
    expect(resolveCgroupPath(`${root}/mem/a`, { procDir: cgroupOnTop }).version).toBe(1)
  })

  it('a relative path is a TypeError', () => {
    expect(() => resolveCgroupPath('sys/fs/cgroup/memory')).toThrow(TypeError)
  })
})

describe('effectiveLimit', () => {
  function v1Tree(files: Record<string, string | null>): CgroupLocation {
    const root = tempRoot()
    build(root, files)
    const proc = procDir(root, [mount(10, '/', `${root}/mem`, 'cgroup', 'rw,memory')], '4:memory:/a/b')
    return findMemoryCgroup({ procDir: proc })
  }

  const stat = (hierarchical: bigint | string): string =>
    `cache 0\nrss 4096\ninactive_file 0\nhierarchical_memory_limit ${hierarchical}\ntotal_cache 0\ntotal_rss 4096\ntotal_inactive_file 0\n`

  it('v1: the limit on the parent applies to an unlimited child', () => {
    const loc = v1Tree({
      'mem/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/memory.limit_in_bytes': `${GiB}\n`,
      'mem/a/b/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/b/memory.stat': stat(BigInt(GiB)),
    })
    expect(effectiveLimit(loc)).toEqual({ limit: GiB, holder: dirname(loc.path), source: 'memory.limit_in_bytes' })
  })

  it('v1: the lowest of several limits wins, and the lowest cgroup on a tie', () => {
    const loc = v1Tree({
      'mem/memory.limit_in_bytes': `${512 * MiB}\n`,
      'mem/a/memory.limit_in_bytes': `${256 * MiB}\n`,
      'mem/a/b/memory.limit_in_bytes': `${256 * MiB}\n`,
      'mem/a/b/memory.stat': stat(BigInt(256 * MiB)),
    })
    expect(effectiveLimit(loc)).toEqual({ limit: 256 * MiB, holder: loc.path, source: 'memory.limit_in_bytes' })
  })

  it('v1: hierarchical_memory_limit below every visible limit is held above the mount', () => {
    const loc = v1Tree({
      'mem/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/memory.limit_in_bytes': `${GiB}\n`,
      'mem/a/b/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/b/memory.stat': stat(BigInt(300 * MiB)),
    })
    expect(effectiveLimit(loc)).toEqual({ limit: 300 * MiB, holder: null, source: 'hierarchical_memory_limit' })
  })

  it('v1: unlimited everywhere is Infinity with no holder', () => {
    const loc = v1Tree({
      'mem/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/b/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/b/memory.stat': stat(UNLIMITED_V1.trim()),
    })
    expect(effectiveLimit(loc)).toEqual({ limit: Infinity, holder: null, source: null })
  })

  it('v1: garbage in a limit file is ERR_PARSE naming that file', () => {
    const loc = v1Tree({
      'mem/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/memory.limit_in_bytes': 'lots\n',
      'mem/a/b/memory.limit_in_bytes': UNLIMITED_V1,
      'mem/a/b/memory.stat': stat(UNLIMITED_V1.trim()),
    })
    const err = errorOf(() => effectiveLimit(loc))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe(`${dirname(loc.path)}/memory.limit_in_bytes`)
  })

  function v2Tree(files: Record<string, string | null>): CgroupLocation {
    const root = tempRoot()
    build(root, { 'v2/cgroup.controllers': 'memory\n', 'v2/a/b/cgroup.controllers': 'memory\n', 'v2/a/b/memory.current': '0\n', ...files })
    const proc = procDir(root, [mount(11, '/', `${root}/v2`, 'cgroup2', 'rw')], '0::/a/b')
    return findMemoryCgroup({ procDir: proc })
  }

  it('v2: memory.high lower than memory.max is the effective limit', () => {
    const loc = v2Tree({
      'v2/a/memory.max': `${2 * GiB}\n`,
      'v2/a/memory.high': 'max\n',
      'v2/a/b/memory.max': `${GiB}\n`,
      'v2/a/b/memory.high': `${768 * MiB}\n`,
    })
    expect(effectiveLimit(loc)).toEqual({ limit: 768 * MiB, holder: loc.path, source: 'memory.high' })
  })

  it('v2: equal memory.max and memory.high report memory.max', () => {
    const loc = v2Tree({
      'v2/a/memory.max': 'max\n',
      'v2/a/memory.high': 'max\n',
      'v2/a/b/memory.max': `${GiB}\n`,
      'v2/a/b/memory.high': `${GiB}\n`,
    })
    expect(effectiveLimit(loc).source).toBe('memory.max')
  })

  it('v2: max everywhere is Infinity (the root has no limit files)', () => {
    const loc = v2Tree({
      'v2/a/memory.max': 'max\n',
      'v2/a/memory.high': 'max\n',
      'v2/a/b/memory.max': 'max\n',
      'v2/a/b/memory.high': 'max\n',
    })
    expect(effectiveLimit(loc)).toEqual({ limit: Infinity, holder: null, source: null })
  })

  it('v2: a cgroup that was removed is ERR_NO_CGROUP', () => {
    const loc = v2Tree({ 'v2/a/b/memory.max': 'max\n' })
    rmSync(loc.path, { recursive: true })
    expect(errorOf(() => effectiveLimit(loc)).code).toBe('ERR_NO_CGROUP')
  })
})

describe('readUsage and readFigures', () => {
  function v1At(files: Record<string, string | null>): CgroupLocation {
    const root = tempRoot()
    build(root, files)
    return { version: 1, path: `${root}/mem/x`, mountPoint: `${root}/mem`, relativePath: '/x' }
  }

  it('reads usage as an exact bigint', () => {
    const loc = v1At({ 'mem/x/memory.usage_in_bytes': '9007199254740993\n' })
    expect(readUsage(loc)).toBe(9007199254740993n)
  })

  it('garbage usage is ERR_PARSE with the path', () => {
    const loc = v1At({ 'mem/x/memory.usage_in_bytes': 'n/a\n' })
    const err = errorOf(() => readUsage(loc))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe(`${loc.path}/memory.usage_in_bytes`)
  })

  it('a missing file is ERR_NO_CGROUP from the read syscall, with errno and path', () => {
    const loc = v1At({ 'mem/x/memory.usage_in_bytes': '4096\n' })
    const err = errorOf(() => readFigures(loc))
    expect(err.code).toBe('ERR_NO_CGROUP')
    expect(err.syscall).toBe('read')
    expect(err.errno).toBe(2)
    expect(err.path).toBe(`${loc.path}/memory.stat`)
  })

  it('a memory.stat without the needed keys is ERR_PARSE naming memory.stat', () => {
    const loc = v1At({ 'mem/x/memory.usage_in_bytes': '4096\n', 'mem/x/memory.stat': 'pgfault 1\n' })
    const err = errorOf(() => readFigures(loc))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe(`${loc.path}/memory.stat`)
  })
})
