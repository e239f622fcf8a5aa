// Hand-drawn SVG line charts for the bench results: axes with round ticks, several series, horizontal
// reference lines (thresholds, limits), vertical event markers and shaded spans, a legend.

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf', '#bcbd22']
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

function niceTicks(lo, hi, count = 6) {
  if (!(hi > lo)) hi = lo + 1
  const raw = (hi - lo) / count
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)
  const ticks = []
  const top = Math.ceil(hi / step - 1e-9) * step
  for (let t = Math.floor(lo / step + 1e-9) * step; t <= top + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)))
  return ticks
}

/**
 * series: [{ name, points: [[x, y]], color?, dash?, dots? }]
 * hlines: [{ y, label, color? }], vlines: [{ x, label, color? }], spans: [{ x0, x1, label }]
 */
export function lineChart({ title, xLabel, yLabel, series, hlines = [], vlines = [], spans = [], width = 980, height = 440, yMin, yMax, xMin, xMax, logX = false }) {
  const legendWidth = 14 + 7 * Math.max(10, ...series.map((x) => String(x.name).length), ...vlines.map((v) => String(v.legend ?? '').length))
  const m = { l: 70, r: legendWidth + 20, t: 40, b: 50 }
  const W = width - m.l - m.r
  const H = height - m.t - m.b
  const xs = series.flatMap((s) => s.points.map((p) => p[0])).concat(vlines.map((v) => v.x))
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(hlines.map((h) => h.y)).filter((y) => Number.isFinite(y))
  const x0 = xMin ?? Math.min(...xs)
  const x1 = xMax ?? Math.max(...xs)
  const yTicks = niceTicks(yMin ?? Math.min(0, ...ys), yMax ?? Math.max(...ys))
  const y0 = yMin ?? yTicks[0]
  const y1 = yMax ?? yTicks[yTicks.length - 1]
  const tx = logX ? (x) => (Math.log(x) - Math.log(x0)) / (Math.log(x1) - Math.log(x0)) : (x) => (x - x0) / (x1 - x0 || 1)
  const X = (x) => m.l + tx(x) * W
  const Y = (y) => m.t + H - ((y - y0) / (y1 - y0 || 1)) * H
  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`)
  out.push(`<text x="${m.l}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`)
  for (const s of spans) {
    out.push(`<rect x="${X(s.x0)}" y="${m.t}" width="${Math.max(1, X(s.x1) - X(s.x0))}" height="${H}" fill="#f2e6c9" opacity="0.7"/>`)
    if (s.label) out.push(`<text x="${X(s.x0) + 4}" y="${m.t + 14}" fill="#7a5c00">${esc(s.label)}</text>`)
  }
  for (const t of yTicks.filter((t) => t >= y0 && t <= y1)) {
    out.push(`<line x1="${m.l}" x2="${m.l + W}" y1="${Y(t)}" y2="${Y(t)}" stroke="#e5e5e5"/>`)
    out.push(`<text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end">${t}</text>`)
  }
  const xTicks = logX ? series[0].points.map((p) => p[0]) : niceTicks(x0, x1)
  for (const t of xTicks.filter((t) => t >= x0 && t <= x1)) {
    out.push(`<line x1="${X(t)}" x2="${X(t)}" y1="${m.t + H}" y2="${m.t + H + 5}" stroke="#333"/>`)
    out.push(`<text x="${X(t)}" y="${m.t + H + 18}" text-anchor="middle">${t}</text>`)
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${W}" height="${H}" fill="none" stroke="#333"/>`)
  out.push(`<text x="${m.l + W / 2}" y="${height - 10}" text-anchor="middle">${esc(xLabel)}</text>`)
  out.push(`<text transform="translate(16 ${m.t + H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`)
  for (const h of hlines) {
    const c = h.color ?? '#555'
    out.push(`<line x1="${m.l}" x2="${m.l + W}" y1="${Y(h.y)}" y2="${Y(h.y)}" stroke="${c}" stroke-dasharray="6 4"/>`)
    if (h.label) out.push(`<text x="${m.l + W - 4}" y="${Y(h.y) - 4}" text-anchor="end" fill="${c}">${esc(h.label)}</text>`)
  }
  const legend = []
  series.forEach((s, i) => {
    const c = s.color ?? COLORS[i % COLORS.length]
    const pts = s.points.filter((p) => Number.isFinite(p[1]))
    if (pts.length > 1 && !s.dotsOnly) {
      out.push(`<polyline fill="none" stroke="${c}" stroke-width="${s.width ?? 2}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} points="${pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')}"/>`)
    }
    if (s.dots || s.dotsOnly || pts.length === 1) for (const p of pts) out.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="${s.r ?? 3.5}" fill="${c}"/>`)
    legend.push({ name: s.name, c, dash: s.dash })
  })
  vlines.forEach((v) => {
    const c = v.color ?? '#000'
    out.push(`<line x1="${X(v.x)}" x2="${X(v.x)}" y1="${m.t}" y2="${m.t + H}" stroke="${c}" stroke-width="1.5"${v.dash ? ` stroke-dasharray="${v.dash}"` : ''}/>`)
    if (v.label) out.push(`<text transform="translate(${X(v.x) + 3} ${m.t + H - 6}) rotate(-90)" fill="${c}">${esc(v.label)}</text>`)
    if (v.legend && !legend.some((l) => l.name === v.legend)) legend.push({ name: v.legend, c, dash: v.dash })
  })
  legend.forEach((l, i) => {
    const y = m.t + 10 + i * 18
    out.push(`<line x1="${m.l + W + 12}" x2="${m.l + W + 36}" y1="${y}" y2="${y}" stroke="${l.c}" stroke-width="3"${l.dash ? ` stroke-dasharray="${l.dash}"` : ''}/>`)
    out.push(`<text x="${m.l + W + 42}" y="${y + 4}">${esc(l.name)}</text>`)
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}

export { COLORS }
