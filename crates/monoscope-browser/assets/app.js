// The monoscope feature browser. Runs offline from disk: data arrive as scripts that call
// monoscope.loaded(name, data). Every string from the run (corpus text, labels, tokens) is
// untrusted and enters the page only as text nodes or DOM-set attributes, never as markup.
"use strict";

const monoscope = (() => {
  const cache = new Map();
  const waiting = new Map();

  function loaded(name, data) {
    cache.set(name, data);
    const w = waiting.get(name);
    if (w) {
      waiting.delete(name);
      w.resolve(data);
    }
  }

  function load(name, src) {
    if (cache.has(name)) return Promise.resolve(cache.get(name));
    if (waiting.has(name)) return waiting.get(name).promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    waiting.set(name, { promise, resolve, reject });
    const script = document.createElement("script");
    script.src = src;
    script.onerror = () => {
      waiting.delete(name);
      reject(new Error("cannot load " + src));
    };
    document.head.appendChild(script);
    return promise;
  }

  return { loaded, load };
})();

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "onclick" || key === "oninput" || key === "onchange") node[key] = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function fmt(value, digits = 3) {
  if (value === undefined || value === null || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && Math.abs(value) < 1e-3) return value.toExponential(1);
  return value.toFixed(digits);
}

function percent(value) {
  return value === undefined || value === null ? "–" : (100 * value).toFixed(value < 0.001 ? 4 : 2) + "%";
}

// Tokens show their spaces; a newline shows as a visible mark so contexts stay on one line.
function visibleToken(token) {
  return String(token).replace(/\n/g, "↵");
}

const main = () => document.getElementById("main");

function show(...children) {
  const m = main();
  m.replaceChildren();
  append(m, children);
}

// ---------------------------------------------------------------- data

function index() {
  return monoscope.load("index", "data/index.js");
}

async function feature(id) {
  const idx = await index();
  const chunk = Math.floor(id / idx.chunk_size);
  const data = await monoscope.load("chunk-" + chunk, "data/features/" + String(chunk).padStart(4, "0") + ".js");
  return data.features[id - data.start];
}

function labelOf(idx, id) {
  const label = idx.columns.label[id];
  return label === null || label === undefined ? "" : String(label);
}

function featureLink(id, text) {
  return el("a", { href: "#/feature/" + id, class: "feature-link" }, text === undefined ? "#" + id : text);
}

// ---------------------------------------------------------------- tooltip

const tooltip = {
  show(text, x, y) {
    const t = document.getElementById("tooltip");
    t.textContent = text;
    t.hidden = false;
    t.style.left = Math.min(x + 12, window.innerWidth - 260) + "px";
    t.style.top = y + 14 + "px";
  },
  hide() {
    document.getElementById("tooltip").hidden = true;
  },
};

document.addEventListener("mouseover", (event) => {
  const tok = event.target.closest && event.target.closest(".tok");
  if (tok) tooltip.show(tok.dataset.tip, event.clientX, event.clientY);
});
document.addEventListener("mouseout", (event) => {
  if (event.target.closest && event.target.closest(".tok")) tooltip.hide();
});

// ---------------------------------------------------------------- pages

async function renderHome() {
  const idx = await index();
  const m = idx.metrics || {};
  const cards = [
    ["features", idx.d_sae],
    ["L0", fmt(m.l0, 1)],
    ["FVU", fmt(m.fvu)],
    ["ce_loss_score", m.ce_loss_score === undefined ? "not measured" : fmt(m.ce_loss_score)],
    ["dead", m.dead_fraction === undefined ? "–" : percent(m.dead_fraction)],
  ];
  const labelled = idx.columns.label.filter((l) => l !== null && l !== "").length;
  const summary = idx.label_summary || {};
  const scored = [];
  idx.columns.score.forEach((s, id) => { if (typeof s === "number") scored.push([s, id]); });
  scored.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  show(
    el("h1", {}, idx.title),
    el("p", { class: "muted" },
      [idx.model, idx.hook, idx.architecture, idx.d_in && idx.d_in + " → " + idx.d_sae, idx.k && "k = " + idx.k]
        .filter(Boolean).join(" · ")),
    el("div", { class: "cards" }, cards.map(([name, value]) =>
      el("div", { class: "card" }, el("div", { class: "value" }, String(value)), el("div", { class: "name" }, name)))),
    el("p", {}, labelled + " labelled features",
      summary.explainer ? " (explainer: " + String(summary.explainer) + ")" : "",
      ". ", el("a", { href: "#/features" }, "Browse the features"),
      idx.has.map ? [" · ", el("a", { href: "#/map" }, "the map")] : "",
      idx.has.steering ? [" · ", el("a", { href: "#/steering" }, "steering")] : ""),
    scored.length ? [
      el("h2", {}, "Best-scored labels"),
      featureTable(idx, scored.slice(0, 10).map(([, id]) => id)),
    ] : "",
  );
}

function featureTable(idx, ids) {
  const c = idx.columns;
  const maxLogFreq = 8;
  return el("table", { id: "feature-table" },
    el("thead", {}, el("tr", {},
      el("th", {}, "Feature"), el("th", {}, "Label"), el("th", {}, "Density"),
      el("th", { class: "num" }, "Max act."), el("th", { class: "num" }, "Score"), el("th", { class: "num" }, "Cluster"))),
    el("tbody", {}, ids.map((id) => {
      const freq = c.frequency[id];
      const dead = freq === 0;
      const width = freq > 0 ? Math.max(2, 60 * (1 + Math.log10(freq) / maxLogFreq)) : 0;
      return el("tr", { class: dead ? "dead feature-row" : "feature-row", "data-feature": id },
        el("td", {}, featureLink(id)),
        el("td", { class: "label-cell" }, dead ? "dead" : labelOf(idx, id)),
        el("td", {}, el("span", { class: "bar", style: "width:" + width + "px" }), percent(freq)),
        el("td", { class: "num" }, fmt(c.max_activation[id], 2)),
        el("td", { class: "num" }, fmt(c.score[id], 2)),
        el("td", { class: "num" }, c.cluster ? fmt(c.cluster[id], 0) : "–"));
    })));
}

const PAGE_SIZE = 100;

function matches(idx, id, query) {
  if (!query) return true;
  const q = query.trim().toLowerCase();
  const idQuery = q.replace(/^#/, "");
  if (/^\d+$/.test(idQuery)) return String(id) === idQuery || String(id).startsWith(idQuery);
  return labelOf(idx, id).toLowerCase().includes(q);
}

async function renderList(params) {
  const idx = await index();
  const state = {
    q: params.get("q") || "",
    sort: params.get("sort") || (idx.has.labels ? "score" : "frequency"),
    page: Number(params.get("page") || 0),
    dead: params.get("dead") === "1",
  };
  const results = el("div", { id: "results" });
  const search = el("input", {
    type: "search", id: "search", placeholder: "Search labels, or a feature id (#123)", value: state.q,
    oninput: () => { state.q = search.value; state.page = 0; update(); },
  });
  const sort = el("select", { id: "sort", onchange: () => { state.sort = sort.value; state.page = 0; update(); } },
    [["score", "best score"], ["frequency", "density"], ["max_activation", "max activation"], ["id", "id"]]
      .map(([value, text]) => el("option", { value, selected: value === state.sort }, "sort by " + text)));
  const dead = el("input", { type: "checkbox", id: "show-dead", checked: state.dead,
    onchange: () => { state.dead = dead.checked; state.page = 0; update(); } });

  function update() {
    const c = idx.columns;
    const ids = [];
    for (let id = 0; id < idx.d_sae; id++) {
      if (!state.dead && c.frequency[id] === 0) continue;
      if (matches(idx, id, state.q)) ids.push(id);
    }
    const key = { score: c.score, frequency: c.frequency, max_activation: c.max_activation }[state.sort];
    if (key) ids.sort((a, b) => (key[b] ?? -1) - (key[a] ?? -1) || a - b);
    const pages = Math.max(1, Math.ceil(ids.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const shown = ids.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    const pager = el("div", { class: "pager" },
      el("button", { disabled: state.page === 0, onclick: () => { state.page--; update(); } }, "← previous"),
      el("span", { id: "count" }, ids.length + " features · page " + (state.page + 1) + " of " + pages),
      el("button", { disabled: state.page >= pages - 1, onclick: () => { state.page++; update(); } }, "next →"));
    results.replaceChildren(pager, featureTable(idx, shown));
    const query = new URLSearchParams();
    if (state.q) query.set("q", state.q);
    query.set("sort", state.sort);
    if (state.page) query.set("page", state.page);
    if (state.dead) query.set("dead", "1");
    history.replaceState(null, "", "#/features?" + query.toString());
  }

  show(
    el("h1", {}, "Features"),
    el("div", { class: "toolbar" }, search, sort, el("label", {}, dead, " show dead features")),
    results,
  );
  update();
  search.focus();
}

function renderContext(context, scale) {
  const acts = context.activations || [];
  const tokens = context.tokens || [];
  const peak = acts.length ? Math.max(...acts) : 0;
  const line = el("div", { class: "context" });
  line.appendChild(el("span", { class: "act" }, fmt(peak, 2)));
  tokens.forEach((token, i) => {
    const act = acts[i] || 0;
    const attrs = { class: "tok", "data-act": act.toFixed(3), "data-tip": JSON.stringify(String(token)) + " · activation " + act.toFixed(3) };
    if (act > 0) {
      attrs.class += " fires";
      const alpha = Math.min(1, 0.15 + 0.85 * act / (scale || peak || 1));
      attrs.style = "background: rgba(249, 115, 22, " + alpha.toFixed(3) + ")";
      attrs.title = "activation " + act.toFixed(3);
    }
    if (i === context.focus) attrs.class += " focus";
    line.appendChild(el("span", attrs, visibleToken(token)));
  });
  return line;
}

function histogram(hist) {
  if (!hist || !hist.counts || !hist.counts.length) return el("p", { class: "muted" }, "no histogram");
  const w = 360, h = 120, n = hist.counts.length;
  const max = Math.max(...hist.counts, 1);
  const chart = svg("svg", { class: "histogram", width: w, height: h + 18, viewBox: "0 0 " + w + " " + (h + 18) });
  hist.counts.forEach((count, i) => {
    const bh = (h * count) / max;
    const rect = svg("rect", { x: (i * w) / n, y: h - bh, width: Math.max(1, w / n - 1), height: bh });
    const title = svg("title", {});
    title.textContent = fmt(hist.edges[i], 2) + " – " + fmt(hist.edges[i + 1], 2) + ": " + count;
    rect.appendChild(title);
    chart.appendChild(rect);
  });
  for (const [x, anchor, value] of [[0, "start", hist.edges[0]], [w, "end", hist.edges[hist.edges.length - 1]]]) {
    const t = svg("text", { x, y: h + 14, "text-anchor": anchor });
    t.textContent = fmt(value, 2);
    chart.appendChild(t);
  }
  return chart;
}

function scoreLine(label) {
  const s = (label && label.scores) || {};
  return el("div", { class: "scores" },
    el("span", {}, "detection ", el("b", { id: "score-detection" }, fmt(s.detection, 2))),
    el("span", {}, "fuzzing ", el("b", { id: "score-fuzzing" }, fmt(s.fuzzing, 2))));
}

async function renderFeature(id) {
  const idx = await index();
  if (!(id >= 0 && id < idx.d_sae)) {
    show(el("p", { class: "error" }, "No feature " + id + " (the SAE has " + idx.d_sae + ")."));
    return;
  }
  const f = await feature(id);
  const ev = f.evidence || {};
  const label = f.label;
  const scale = ev.max_activation || 0;
  const nav = el("p", {},
    id > 0 ? featureLink(id - 1, "← #" + (id - 1)) : "", " ",
    id + 1 < idx.d_sae ? featureLink(id + 1, "#" + (id + 1) + " →") : "");
  const header = [
    el("h1", {}, "Feature #" + id),
    el("div", { class: "label", id: "feature-label" }, label ? String(label.label) : ev.fires === 0 ? "dead feature" : "(no label)"),
    label && label.explanation ? el("p", { class: "explanation" }, String(label.explanation)) : "",
    label ? el("p", { class: "muted" }, "explainer: " + label.explainer) : "",
    label ? scoreLine(label) : "",
    label && label.baseline ? el("p", { class: "muted" }, "statistical baseline: “" + label.baseline.label + "” · detection " +
      fmt((label.baseline.scores || {}).detection, 2) + " · fuzzing " + fmt((label.baseline.scores || {}).fuzzing, 2)) : "",
  ];
  const cards = el("div", { class: "cards" },
    [["density", percent(ev.frequency ?? idx.columns.frequency[id])], ["fires", ev.fires ?? "–"],
      ["max activation", fmt(ev.max_activation ?? idx.columns.max_activation[id], 2)], ["mean activation", fmt(ev.mean_activation, 2)],
      ["cluster", f.cluster ? f.cluster.id : "–"]]
      .map(([name, value]) => el("div", { class: "card" }, el("div", { class: "value" }, String(value)), el("div", { class: "name" }, name))));
  const cluster = f.cluster ? el("p", {}, "Cluster " + f.cluster.id + ": " + (f.cluster.top_words || []).join(", ") + " · ",
    el("a", { href: "#/map?feature=" + id }, "show on the map")) : "";
  const logits = ev.logits ? el("div", { class: "columns" },
    el("div", {}, el("h3", {}, "Promoted tokens"), (ev.logits.promoted || []).map((t) =>
      el("span", { class: "logit up", title: fmt(t.value, 3) }, visibleToken(t.token) + " " + fmt(t.value, 2)))),
    el("div", {}, el("h3", {}, "Suppressed tokens"), (ev.logits.suppressed || []).map((t) =>
      el("span", { class: "logit down", title: fmt(t.value, 3) }, visibleToken(t.token) + " " + fmt(t.value, 2))))) : "";
  const neighbours = f.neighbours ? el("table", { id: "neighbours" },
    el("thead", {}, el("tr", {}, el("th", {}, "Feature"), el("th", { class: "num" }, "Cosine"), el("th", {}, "Label"))),
    el("tbody", {}, f.neighbours.map((n) => el("tr", { class: "neighbour" },
      el("td", {}, featureLink(n.feature)), el("td", { class: "num" }, fmt(n.cosine, 3)),
      el("td", {}, n.label === null || n.label === undefined ? "" : String(n.label)))))) : el("p", { class: "muted" }, "No neighbours (the run has no cluster stage).");
  show(
    nav, header, cards, cluster,
    el("div", { class: "columns" },
      el("div", {}, el("h2", {}, "Activation histogram"), histogram(ev.histogram)),
      el("div", {}, el("h2", {}, "Logit effects"), logits || el("p", { class: "muted" }, "–"))),
    el("h2", {}, "Top activations"),
    el("div", { class: "contexts", id: "top-contexts" }, (ev.top || []).map((c) => renderContext(c, scale))),
    (ev.quantiles || []).length ? el("h2", {}, "Samples by activation quantile") : "",
    (ev.quantiles || []).map((q) => el("div", {},
      el("h3", {}, "activations " + fmt(q.low, 2) + " – " + fmt(q.high, 2)),
      el("div", { class: "contexts" }, (q.examples || []).map((c) => renderContext(c, scale))))),
    (ev.random || []).length ? [el("h2", {}, "Random contexts where it does not fire"),
      el("div", { class: "contexts" }, ev.random.map((c) => renderContext(c, scale)))] : "",
    el("h2", {}, "Nearest features (decoder cosine)"), neighbours,
  );
}

function clusterColour(cluster) {
  if (cluster === null || cluster === undefined) return "rgba(148,163,184,0.6)";
  return "hsl(" + ((cluster * 137.508) % 360).toFixed(1) + ", 70%, 45%)";
}

async function renderMap(params) {
  const idx = await index();
  if (!idx.has.map) {
    show(el("h1", {}, "Map"), el("p", { class: "muted" }, "This run has no map (add a cluster stage)."));
    return;
  }
  const map = await monoscope.load("map", "data/map.js");
  const focus = params.has("feature") ? Number(params.get("feature")) : null;
  const canvas = el("canvas", { id: "map" });
  const search = el("input", { type: "search", id: "map-search", placeholder: "Highlight features whose label contains…",
    oninput: () => { highlight = search.value.trim().toLowerCase(); draw(); } });
  let highlight = "";
  let picked = null;
  const clusters = (idx.clusters && idx.clusters.clusters) || [];
  const legend = el("div", { class: "legend" }, clusters.slice(0, 16).map((c) =>
    el("a", { onclick: () => { picked = picked === c.id ? null : c.id; draw(); } },
      el("span", { class: "swatch", style: "background:" + clusterColour(c.id) }),
      "#" + c.id + " (" + c.size + "): " + (c.top_words || []).slice(0, 4).join(", "))));
  show(
    el("h1", {}, "Map of features"),
    el("p", { class: "muted" }, (map.method || "layout") + " of decoder directions, coloured by cluster" +
      (map.neighbourhood_preservation !== undefined && map.neighbourhood_preservation !== null
        ? " · neighbourhood preservation " + fmt(map.neighbourhood_preservation, 3) : "") +
      ". Scroll to zoom, drag to pan, click a point to open its feature."),
    el("div", { class: "toolbar" }, search),
    el("div", { class: "map-wrap" }, canvas),
    legend,
  );
  const ctx = canvas.getContext("2d");
  const view = { scale: 1, x: 0, y: 0 };
  let size = { w: 0, h: 0 };
  const pad = 12;
  // One scale for both axes, so that distances on the map mean the same in every direction.
  const screen = (i) => {
    const side = Math.min(size.w, size.h) - 2 * pad;
    const left = (size.w - side) / 2, top = (size.h - side) / 2;
    return [left + map.x[i] * side * view.scale + view.x, top + (1 - map.y[i]) * side * view.scale + view.y];
  };

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    size = { w: canvas.clientWidth, h: canvas.clientHeight };
    canvas.width = size.w * ratio;
    canvas.height = size.h * ratio;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, size.w, size.h);
    const radius = Math.min(5, 1.6 + view.scale * 0.6);
    const emphasised = [];
    for (let i = 0; i < map.x.length; i++) {
      const cluster = map.cluster ? map.cluster[i] : null;
      const hit = (highlight && labelOf(idx, i).toLowerCase().includes(highlight)) || (picked !== null && cluster === picked);
      if (hit) { emphasised.push(i); continue; }
      const [sx, sy] = screen(i);
      if (sx < -5 || sy < -5 || sx > size.w + 5 || sy > size.h + 5) continue;
      ctx.globalAlpha = highlight || picked !== null ? 0.15 : 0.8;
      ctx.fillStyle = clusterColour(cluster);
      ctx.beginPath();
      ctx.arc(sx, sy, radius, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    for (const i of emphasised) {
      const [sx, sy] = screen(i);
      ctx.fillStyle = clusterColour(map.cluster ? map.cluster[i] : null);
      ctx.beginPath();
      ctx.arc(sx, sy, radius + 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (focus !== null && focus < map.x.length) {
      const [sx, sy] = screen(focus);
      ctx.strokeStyle = "#111827";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(sx, sy, radius + 6, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  function nearest(event) {
    const rect = canvas.getBoundingClientRect();
    const mx = event.clientX - rect.left, my = event.clientY - rect.top;
    let best = null, bestDistance = 64;
    for (let i = 0; i < map.x.length; i++) {
      const [sx, sy] = screen(i);
      const d = (sx - mx) ** 2 + (sy - my) ** 2;
      if (d < bestDistance) { bestDistance = d; best = i; }
    }
    return best;
  }

  let drag = null;
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const mx = event.clientX - rect.left, my = event.clientY - rect.top;
    const factor = Math.exp(-event.deltaY * 0.0015);
    const scale = Math.min(200, Math.max(0.5, view.scale * factor));
    const k = scale / view.scale;
    view.x = mx - (mx - view.x) * k;
    view.y = my - (my - view.y) * k;
    view.scale = scale;
    draw();
  }, { passive: false });
  canvas.addEventListener("mousedown", (event) => { drag = { x: event.clientX, y: event.clientY, moved: false }; });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  canvas.addEventListener("mousemove", (event) => {
    if (drag && event.buttons) {
      view.x += event.clientX - drag.x;
      view.y += event.clientY - drag.y;
      drag.moved = drag.moved || Math.abs(event.clientX - drag.x) + Math.abs(event.clientY - drag.y) > 0;
      drag.x = event.clientX;
      drag.y = event.clientY;
      draw();
      return;
    }
    const i = nearest(event);
    if (i === null) tooltip.hide();
    else tooltip.show("#" + i + " " + labelOf(idx, i), event.clientX, event.clientY);
  });
  canvas.addEventListener("mouseleave", () => tooltip.hide());
  canvas.addEventListener("click", (event) => {
    if (drag && drag.moved) return;
    const i = nearest(event);
    if (i !== null) location.hash = "#/feature/" + i;
  });
  window.onresize = draw;
  draw();
}

async function renderSteering() {
  const idx = await index();
  if (!idx.has.steering) {
    show(el("h1", {}, "Steering"), el("p", { class: "muted" }, "This run has no steering report (add a steer stage)."));
    return;
  }
  const report = await monoscope.load("steering", "data/steering.js");
  const experiments = report.experiments || [];
  show(
    el("h1", {}, "Steering"),
    el("p", { class: "muted" }, [report.model, report.hook, report.seed !== undefined && "seed " + report.seed].filter(Boolean).join(" · ")),
    experiments.map((x, n) => el("section", { class: "experiment" },
      el("h2", {}, (x.mode || "intervention") + " ", (x.features || []).map((f, i) => [
        i ? ", " : "", featureLink(f.id), f.label ? " “" + f.label + "”" : ""]),
        el("span", { class: "muted" }, " · " + (x.features || []).map((f) => f.selected_by).filter(Boolean).join(", "))),
      (x.targets || []).length ? el("p", {}, "target words: " + x.targets.join(", ")) : "",
      (x.effects || []).length ? el("table", { class: "effects", id: "effects-" + n },
        el("thead", {}, el("tr", {}, el("th", { class: "num" }, "multiple"), el("th", { class: "num" }, "value"),
          el("th", { class: "num" }, "target prob."), el("th", { class: "num" }, "Δ log-prob"), el("th", { class: "num" }, "KL on neutral text"))),
        el("tbody", {}, x.effects.map((e) => el("tr", {},
          el("td", { class: "num" }, fmt(e.multiple, 1)), el("td", { class: "num" }, (e.values || []).map((v) => fmt(v, 2)).join(", ")),
          el("td", { class: "num" }, fmt(e.target_prob, 4)), el("td", { class: "num" }, fmt(e.target_logprob_delta, 3)),
          el("td", { class: "num" }, fmt(e.kl_neutral, 4)))))) : "",
      (x.prompts || []).map((p) => el("div", {},
        el("h3", {}, "Prompt: ", el("span", { class: "prompt" }, String(p.prompt)), p.chat ? " (chat)" : ""),
        el("div", { class: "steer-grid" },
          el("div", { class: "generation" }, el("h4", {}, "without intervention"), String(p.baseline ?? "")),
          (p.steered || []).map((s) => el("div", { class: "generation" },
            el("h4", {}, (x.mode || "") + " × " + fmt(s.multiple, 1)), String(s.text ?? "")))))))),
  );
}

// ---------------------------------------------------------------- router

async function route() {
  delete document.body.dataset.ready;
  tooltip.hide();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  for (const name of ["features", "map", "steering"]) {
    document.getElementById("nav-" + name).classList.toggle("active", path.startsWith("/" + name) || (name === "features" && path.startsWith("/feature/")));
  }
  try {
    if (path.startsWith("/feature/")) await renderFeature(Number(path.slice("/feature/".length)));
    else if (path.startsWith("/features")) await renderList(params);
    else if (path.startsWith("/map")) await renderMap(params);
    else if (path.startsWith("/steering")) await renderSteering();
    else await renderHome();
    window.scrollTo(0, 0);
  } catch (error) {
    show(el("p", { class: "error" }, "Error: " + error.message));
  }
  document.body.dataset.ready = "1";
}

window.addEventListener("hashchange", route);
route();
