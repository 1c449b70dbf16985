// Charts drawn as plain SVG and HTML: stacked columns, sparklines, horizontal bars. No library.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (name === "text") node.textContent = value;
      else if (name === "style") Object.assign(node.style, value);
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}, children = []) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // Round steps (1, 2, 2.5, 5 × 10^n) so the axis reads 0, 250k, 500k … rather than 0, 237k, 474k.
  function niceStep(max, ticks) {
    if (max <= 0) return 1;
    const raw = max / ticks;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].find((m) => m * power >= raw);
    return step * power;
  }

  // A horizontal bar of the shares of a whole; each segment's value is on hover and in the legend.
  function shareBar(segments, describe) {
    const total = segments.reduce((sum, s) => sum + Math.max(s.value, 0), 0);
    const bar = el("div", { class: "share-bar", role: "img" });
    for (const s of segments) {
      if (s.value <= 0 || total <= 0) continue;
      const share = s.value / total;
      bar.append(el("span", {
        title: `${s.label}: ${describe(s.value)} (${Format.fraction(share)})`,
        style: { flexGrow: String(share), background: s.color },
      }, [share >= 0.07 ? el("b", { text: Format.fraction(share) }) : null]));
    }
    if (!bar.childElementCount) bar.append(el("em", { text: "nothing outstanding" }));
    return bar;
  }

  // Stacked columns, one per category, with a labelled value axis.
  function columns({ categories, series, width = 640, height = 220, format }) {
    const margin = { top: 12, right: 8, bottom: 26, left: 64 };
    const totals = categories.map((_, i) => series.reduce((sum, s) => sum + Math.max(s.values[i] || 0, 0), 0));
    const step = niceStep(Math.max(...totals, 0), 4);
    const top = Math.max(step, Math.ceil(Math.max(...totals, 0) / step) * step);
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;
    const y = (v) => margin.top + plotH - (v / top) * plotH;
    // A few months stand together in the middle rather than scattered over the width.
    const slot = Math.min(plotW / Math.max(categories.length, 1), 110);
    const start = margin.left + (plotW - slot * categories.length) / 2;
    const barW = Math.min(48, slot * 0.7);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "columns", role: "img" });
    for (let v = 0; v <= top + step / 2; v += step) {
      chart.append(svg("line", { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v), class: "grid" }));
      chart.append(svg("text", { x: margin.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end", text: format(v) }));
    }
    categories.forEach((category, i) => {
      const x = start + slot * i + (slot - barW) / 2;
      let base = 0;
      for (const s of series) {
        const v = Math.max(s.values[i] || 0, 0);
        if (v > 0) {
          const rect = svg("rect", { x, y: y(base + v), width: barW, height: y(base) - y(base + v), fill: s.color });
          rect.append(svg("title", { text: `${category} · ${s.label}: ${format(v, true)}` }));
          chart.append(rect);
        }
        base += v;
      }
      const every = Math.ceil(categories.length / 12);
      if (i % every === 0 || i === categories.length - 1) {
        chart.append(svg("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle", text: category }));
      }
    });
    return chart;
  }

  // A small line of the last months; a gap where a month has no value.
  function sparkline(values, { width = 120, height = 32, color = "#3b6ea8" } = {}) {
    const known = values.filter((v) => v !== null && v !== undefined);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", "aria-hidden": "true" });
    if (known.length < 2) return chart;
    const low = Math.min(...known);
    const high = Math.max(...known);
    const span = high - low || 1;
    const x = (i) => 2 + (i * (width - 4)) / Math.max(values.length - 1, 1);
    const y = (v) => height - 3 - ((v - low) / span) * (height - 6);
    let path = "";
    let pen = false;
    values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    chart.append(svg("path", { d: path, fill: "none", stroke: color, "stroke-width": 1.6 }));
    const last = values.length - 1;
    if (values[last] !== null && values[last] !== undefined) {
      chart.append(svg("circle", { cx: x(last), cy: y(values[last]), r: 2.4, fill: color }));
    }
    return chart;
  }

  // Horizontal bars against the largest row: a label, the bar, and the figure in words.
  function bars(rows, { color = "#3b6ea8" } = {}) {
    const largest = Math.max(...rows.map((r) => r.value), 0);
    return el("div", { class: "bars" }, rows.map((r) => el("div", { class: "bar-row", "data-key": r.key }, [
      el("span", { class: "bar-label", text: r.label }),
      el("span", { class: "bar-track" }, [el("span", {
        class: "bar-fill",
        style: { width: `${largest > 0 ? (100 * r.value) / largest : 0}%`, background: r.color || color },
      })]),
      el("span", { class: "bar-value" }, r.figures),
    ])));
  }

  // The colour of bucket i of n: current in green, older buckets through amber to deep red.
  const AGING = ["#3f9b6e", "#e3c34f", "#eb9a3f", "#de6b3a", "#c43d35", "#8f2430", "#5c1825"];
  function agingColors(labels) {
    const n = labels.length;
    return labels.map((_, i) => AGING[n <= AGING.length
      ? Math.round((i * (AGING.length - 1)) / Math.max(n - 1, 1))
      : Math.min(i, AGING.length - 1)]);
  }

  return { el, shareBar, columns, sparkline, bars, agingColors };
})();
