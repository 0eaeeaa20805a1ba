// The timeline chart's drawing helpers (an ES module of tanet serve's page): SVG elements, the
// palette, and the action segments as labelled bands.
export const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                       "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";

export function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

// The grid, the probability ticks and the time ticks of a chart W x H with margins m, axes
// x(t) (seconds) and y(p) (probability) up to `end` seconds.
export function drawAxes(svg, { W, H, m, x, y, end }) {
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    el("line", { x1: m.l, x2: W - m.r, y1: y(p), y2: y(p), class: "grid" }, svg);
    el("text", { x: m.l - 6, y: y(p) + 4, class: "tick", "text-anchor": "end" }, svg)
      .textContent = p.toFixed(2);
  }
  const step = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300].find((s) => end / s <= 8) || 600;
  for (let t = 0; t <= end + 1e-9; t += step) {
    el("text", { x: x(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle" }, svg)
      .textContent = `${t}s`;
  }
  el("text", { x: (m.l + W - m.r) / 2, y: H - 4, class: "axis", "text-anchor": "middle" }, svg)
    .textContent = "time (s, window centre)";
}

// A colour per label: the series' own for the classes drawn as lines, the next free ones after.
export function labelColors(series) {
  const colors = new Map(series.map((s, i) => [s.label, COLORS[i % COLORS.length]]));
  return (label) => {
    if (!colors.has(label)) colors.set(label, COLORS[colors.size % COLORS.length]);
    return colors.get(label);
  };
}

// One band per segment [{start, end, label, score}] from y to y + h on the time axis x(t): a
// <g class="segment"> with data-label/-start/-end, a tooltip, and its label inside where it fits.
export function drawSegments(svg, segments, x, y, h, colorOf) {
  for (const s of segments) {
    const g = el("g", { class: "segment", "data-label": s.label, "data-start": s.start,
                        "data-end": s.end }, svg);
    const x0 = x(s.start), width = Math.max(1, x(s.end) - x0);
    el("rect", { x: x0, y, width, height: h, rx: 3, fill: colorOf(s.label) }, g);
    el("title", {}, g).textContent = `${s.start.toFixed(1)}–${s.end.toFixed(1)} s: ${s.label} ` +
      `(${(100 * s.score).toFixed(0)} %)`;
    if (width >= 7 * s.label.length + 8) {
      el("text", { x: x0 + 4, y: y + h / 2 + 4, class: "segment-label" }, g).textContent = s.label;
    }
  }
}
