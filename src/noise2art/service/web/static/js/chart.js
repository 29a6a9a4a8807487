// A small SVG line chart of scores per iteration (no library).
const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 240, PAD = { l: 56, r: 12, t: 14, b: 30 };

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

/** Redraw `svg` with `points` [{iteration, score, best?}] (keeps its <title>); `xlabel` names the x axis. */
export function drawChart(svg, points, { xlabel = "iteration" } = {}) {
  const title = svg.querySelector("title");
  svg.replaceChildren(...(title ? [title] : []));
  svg.append(node("line", { class: "axis", x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b }),
    node("line", { class: "axis", x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b }));
  if (!points.length) return;
  const values = points.flatMap((p) => (typeof p.best === "number" ? [p.score, p.best] : [p.score]));
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const first = points[0].iteration, last = Math.max(points[points.length - 1].iteration, first + 1);
  const x = (i) => PAD.l + ((i - first) / (last - first)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - ((v - lo) / (hi - lo)) * (H - PAD.t - PAD.b);
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
  svg.append(node("text", { class: "label", x: 4, y: PAD.t + 10 }, fmt(hi)),
    node("text", { class: "label", x: 4, y: H - PAD.b }, fmt(lo)),
    node("text", { class: "label", x: PAD.l, y: H - 8 }, `${xlabel} ${first}`),
    node("text", { class: "label", x: W - PAD.r, y: H - 8, "text-anchor": "end" }, `${last}`));
  const line = (key, cls) => {
    const pts = points.filter((p) => typeof p[key] === "number").map((p) => `${x(p.iteration)},${y(p[key])}`);
    if (pts.length) svg.append(node("polyline", { class: cls, points: pts.join(" ") }));
  };
  line("best", "best");
  line("score", "score");
  for (const p of points) {
    const c = node("circle", { class: "point", cx: x(p.iteration), cy: y(p.score), r: 3 });
    c.append(node("title", {}, `${xlabel} ${p.iteration}: ${p.score}`));
    svg.append(c);
  }
}
