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
  for (const child of children.flat(Infinity)) {
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

// Labels made only of digits and punctuation (a feature for "0" or ",") are real but say
// little about what a dictionary found; the overview lists labels with a letter in them.
function hasWords(label) {
  return /\p{L}/u.test(String(label || ""));
}

function analysisData(idx, name) {
  return idx.has[name] ? monoscope.load(name, "data/" + name + ".js") : Promise.resolve(null);
}

function memberName(split, member) {
  const m = split.members[member] || {};
  return String(m.name) + " (" + m.d_sae + ")";
}

function tokenList(tokens, limit = 4) {
  return (tokens || []).slice(0, limit).map((t) => el("span", { class: "tokens-inline" }, visibleToken(t)));
}

// The features of the site's SAE in a family tree, the most frequent first.
function mainFeaturesIn(tree, main) {
  const found = [];
  (function walk(node) {
    if (node.member === main) found.push(node);
    else if (node.member < main) (node.children || []).forEach(walk);
  })(tree);
  return found.sort((a, b) => b.firings - a.firings);
}

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
  idx.columns.score.forEach((s, id) => { if (typeof s === "number" && hasWords(labelOf(idx, id))) scored.push([s, id]); });
  scored.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const [families, coverage, attribution, contrast, steering] = await Promise.all(
    ["families", "coverage", "attribution", "contrast", "steering"].map((name) => analysisData(idx, name)));
  const findings = [
    families && familiesFinding(idx, families),
    coverage && coverageFinding(coverage),
    attribution && attributionFinding(idx, attribution),
    contrast && contrastFinding(idx, contrast),
  ].filter(Boolean);
  const recognisable = recognisableFeatures(idx, families, contrast, steering);
  show(
    el("h1", {}, idx.title),
    el("p", { class: "muted" },
      [idx.model, idx.hook, idx.architecture, idx.d_in && idx.d_in + " → " + idx.d_sae, idx.k && "k = " + idx.k]
        .filter(Boolean).join(" · ")),
    findings.length ? el("section", { id: "findings" }, el("h2", {}, "What this run found"), el("div", { class: "findings" }, findings)) : "",
    recognisable.length ? el("section", { id: "recognisable" }, el("h2", {}, "Features to start with"),
      el("ul", { class: "recognisable" }, recognisable)) : "",
    findings.length || recognisable.length ? el("h2", {}, "The dictionary") : "",
    el("div", { class: "cards" }, cards.map(([name, value]) =>
      el("div", { class: "card" }, el("div", { class: "value" }, String(value)), el("div", { class: "name" }, name)))),
    el("p", {}, labelled + " labelled features",
      summary.explainer ? " (explainer: " + String(summary.explainer) + ")" : "",
      ". ", el("a", { href: "#/features" }, "Browse the features"),
      idx.has.map ? [" · ", el("a", { href: "#/map" }, "the map")] : "",
      idx.has.steering ? [" · ", el("a", { href: "#/steering" }, "steering")] : ""),
    scored.length ? [
      el("h2", { id: "best-labels" }, "Best-scored labels"),
      featureTable(idx, scored.slice(0, 10).map(([, id]) => id)),
    ] : "",
  );
}

function familiesFinding(idx, families) {
  const split = idx.split;
  const sizes = split.members.map((mb) => String(mb.name) + " (" + mb.d_sae + ")").join(" → ");
  return el("div", { class: "finding", id: "finding-families" },
    el("h3", {}, el("a", { href: "#/families" }, "Feature splitting")),
    el("p", {}, families.split + " of " + families.roots + " features of the smallest SAE split into more than one feature of the largest (" + sizes + "). The largest families:"),
    el("ul", {}, families.families.slice(0, 5).map((f) => {
      const mains = mainFeaturesIn(f.tree, split.main).slice(0, 3);
      return el("li", {},
        el("a", { href: "#/families?root=" + f.root }, "family " + f.root), " ", tokenList(f.tree.top_tokens, 2),
        " " + f.sizes.join(" → ") + ": ",
        mains.map((n, i) => [i ? ", " : "", featureLink(n.feature), " " + (labelOf(idx, n.feature) || "")]));
    })));
}

function coveredCounts(coverage) {
  return coverage.members.map((mb, i) => coverage.concepts.filter((c) => c.best[i] && c.best[i].covered).length);
}

function coverageFinding(coverage) {
  const counts = coveredCounts(coverage);
  const total = coverage.concepts.length;
  return el("div", { class: "finding", id: "finding-coverage" },
    el("h3", {}, el("a", { href: "#/coverage" }, "Coverage of " + total + " concepts")),
    el("ul", {}, coverage.members.map((mb, i) => el("li", {},
      String(mb.name) + " (" + mb.d_sae + " features): " + counts[i] + " of " + total + " covered (" + percent(total ? counts[i] / total : 0) + ")"))));
}

function attributionFinding(idx, attribution) {
  return el("div", { class: "finding", id: "finding-attribution" },
    el("h3", {}, el("a", { href: "#/attribution" }, "Attribution")),
    el("ul", {}, attribution.map((a) => el("li", {},
      "“" + String(a.prompt) + "” → “" + String(a.target) + "”: ",
      (a.entries || []).slice(0, 3).map((e, i) => [i ? ", " : "", featureLink(e.feature), " " + entryLabel(idx, e)]),
      a.ablated ? el("span", { class: "muted" }, " · ablation agreed in sign for " + a.sign_agreements + " of " + a.ablated) : ""))));
}

function contrastFinding(idx, contrast) {
  return el("div", { class: "finding", id: "finding-contrast" },
    el("h3", {}, el("a", { href: "#/contrast" }, "Contrastive searches")),
    el("ul", {}, contrast.map((c) => el("li", {},
      String(c.name) + ": ",
      (c.hits || []).slice(0, 3).map((h, i) => [i ? ", " : "", featureLink(h.feature), " " + entryLabel(idx, h) +
        " (" + fmt(h.difference, 2) + " ± " + fmt(h.standard_error, 2) + ")"])))));
}

// The label an analysis recorded, else the site's.
function entryLabel(idx, entry) {
  return entry.label === null || entry.label === undefined ? labelOf(idx, entry.feature) : String(entry.label);
}

// Features a reader can recognise: what the steering experiments chose by a text, the
// contrastive searches' best hits, and the site's SAE's features in the largest families.
function recognisableFeatures(idx, families, contrast, steering) {
  const seen = new Set();
  const items = [];
  const add = (id, label, why) => {
    if (seen.has(id) || !(id >= 0 && id < idx.d_sae)) return;
    seen.add(id);
    items.push(el("li", { class: "recognisable-feature", "data-feature": id },
      featureLink(id), " ", el("b", {}, label || labelOf(idx, id) || "(no label)"), el("span", { class: "muted" }, " — ", why)));
  };
  for (const x of (steering && steering.experiments) || []) {
    for (const f of x.features || []) {
      const by = String(f.selected_by || "");
      if (!by.startsWith("text:")) continue;
      add(f.id, f.label, ["chosen by the text “" + by.slice("text:".length) + "”",
        f.token ? " (peaks on " + JSON.stringify(String(f.token)) + ")" : "", " for ",
        el("a", { href: "#/steering" }, "steering")]);
    }
  }
  for (const c of contrast || []) {
    for (const h of (c.hits || []).slice(0, 2)) {
      add(h.feature, h.label, ["top hit of the contrastive search “" + String(c.name) + "”"]);
    }
  }
  for (const f of ((families && families.families) || []).slice(0, 5)) {
    const [first] = mainFeaturesIn(f.tree, idx.split.main);
    if (first) add(first.feature, null, ["in ", el("a", { href: "#/families?root=" + f.root }, "family " + f.root),
      ", which splits into " + f.sizes[f.sizes.length - 1]]);
  }
  return items;
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
    f.split && idx.split ? splitSection(idx, f.split) : "",
    el("h2", {}, "Nearest features (decoder cosine)"), neighbours,
  );
}

// A link measure's value, and which feature it points to when that is not the chosen parent.
function linkValue(value, to, parent) {
  return fmt(value, 2) + (to !== null && to !== undefined && to !== parent ? " (to #" + to + ")" : "");
}

function splitSection(idx, split) {
  const s = idx.split;
  const memberTag = (member) => el("span", { class: "member-tag", style: "background:" + clusterColour(member * 3) }, memberName(s, member));
  const head = (...names) => el("thead", {}, el("tr", {}, names.map(([name, cls]) => el("th", { class: cls }, name))));
  const parents = split.parents || [];
  const children = split.children || [];
  return [
    el("h2", {}, "Feature splitting"),
    el("p", { class: "muted" }, "Across SAEs of " + s.members.map((m) => m.d_sae).join(", ") + " features: parents by " + String(s.criterion) + "." +
      (split.family !== null && split.family !== undefined ? " Family " + split.family + " (" : ""),
      split.family !== null && split.family !== undefined ? [el("a", { href: "#/families?root=" + split.family }, "its tree"), ")."] : ""),
    el("h3", {}, "Parents in the smaller SAEs"),
    parents.length ? el("table", { id: "split-parents" },
      head(["Parent in"], ["Feature"], ["Top tokens"], ["Firings", "num"], ["Cosine", "num"], ["Co-activation", "num"]),
      el("tbody", {}, parents.map((p) => el("tr", { class: "split-parent" },
        el("td", {}, memberTag(p.member)), el("td", {}, "#" + p.feature), el("td", {}, tokenList(p.top_tokens)),
        el("td", { class: "num" }, p.firings), el("td", { class: "num" }, linkValue(p.cosine, p.cosine_to, p.feature)),
        el("td", { class: "num" }, linkValue(p.coactivation, p.coactivation_to, p.feature)))))) :
      el("p", { class: "muted" }, s.main > 0 ? "No parent in the smaller SAEs." : "This is the smallest SAE of the family."),
    el("h3", {}, "Children in the larger SAEs"),
    children.length ? el("table", { id: "split-children" },
      head(["Child in"], ["Feature"], ["Parent"], ["Top tokens"], ["Firings", "num"], ["Cosine", "num"], ["Co-activation", "num"]),
      el("tbody", {}, children.map((level) => [
        level.features.map((c) => el("tr", { class: "split-child" },
          el("td", {}, memberTag(c.member)), el("td", {}, "#" + c.feature), el("td", {}, "#" + c.link.parent),
          el("td", {}, tokenList(c.top_tokens)), el("td", { class: "num" }, c.firings),
          el("td", { class: "num" }, linkValue(c.link.cosine, c.link.cosine_to, c.link.parent)),
          el("td", { class: "num" }, linkValue(c.link.coactivation, c.link.coactivation_to, c.link.parent)))),
        level.total > level.features.length ? el("tr", {}, el("td", { colspan: 7, class: "muted" },
          "… and " + (level.total - level.features.length) + " more in " + memberName(s, level.member))) : "",
      ]))) :
      el("p", { class: "muted" }, s.main + 1 < s.members.length ? "No children in the larger SAEs." : "This is the largest SAE of the family."),
  ];
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
  // Points are coloured by cluster, or by family (their ancestor in the smallest SAE of a
  // split family) when the run has one.
  let colourBy = params.get("colour") === "family" && map.family ? "family" : "cluster";
  const groupOf = (i) => {
    const groups = colourBy === "family" ? map.family : map.cluster;
    return groups ? groups[i] : null;
  };
  const families = map.family ? await analysisData(idx, "families") : null;
  const rootTokens = new Map(((families && families.families) || []).map((f) => [f.root, f.tree.top_tokens || []]));
  const clusters = (idx.clusters && idx.clusters.clusters) || [];
  const legend = el("div", { class: "legend", id: "map-legend" });
  function legendEntries() {
    if (colourBy === "cluster") {
      return clusters.slice(0, 16).map((c) => [c.id, "#" + c.id + " (" + c.size + "): " + (c.top_words || []).slice(0, 4).join(", ")]);
    }
    const sizes = new Map();
    for (const f of map.family) if (f !== null && f !== undefined) sizes.set(f, (sizes.get(f) || 0) + 1);
    return [...sizes].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, 16)
      .map(([f, n]) => [f, "family " + f + " (" + n + "): " + (rootTokens.get(f) || []).slice(0, 3).map(visibleToken).join(", ")]);
  }
  function drawLegend() {
    legend.replaceChildren(...legendEntries().map(([group, text]) =>
      el("a", { onclick: () => { picked = picked === group ? null : group; draw(); } },
        el("span", { class: "swatch", style: "background:" + clusterColour(group) }), text)));
  }
  const colourSelect = map.family ? el("select", { id: "map-colour", onchange: () => {
    colourBy = colourSelect.value;
    picked = null;
    caption.textContent = captionText();
    drawLegend();
    draw();
  } }, [["cluster", "colour by cluster"], ["family", "colour by family"]].map(([value, text]) =>
    el("option", { value, selected: value === colourBy }, text))) : "";
  const captionText = () => (map.method || "layout") + " of decoder directions, coloured by " + colourBy +
    (map.neighbourhood_preservation !== undefined && map.neighbourhood_preservation !== null
      ? " · neighbourhood preservation " + fmt(map.neighbourhood_preservation, 3) : "") +
    ". Scroll to zoom, drag to pan, click a point to open its feature.";
  const caption = el("p", { class: "muted", id: "map-caption" }, captionText());
  drawLegend();
  show(
    el("h1", {}, "Map of features"),
    caption,
    el("div", { class: "toolbar" }, search, colourSelect),
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
      const group = groupOf(i);
      const hit = (highlight && labelOf(idx, i).toLowerCase().includes(highlight)) || (picked !== null && group === picked);
      if (hit) { emphasised.push(i); continue; }
      const [sx, sy] = screen(i);
      if (sx < -5 || sy < -5 || sx > size.w + 5 || sy > size.h + 5) continue;
      ctx.globalAlpha = highlight || picked !== null ? 0.15 : 0.8;
      ctx.fillStyle = clusterColour(group);
      ctx.beginPath();
      ctx.arc(sx, sy, radius, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    for (const i of emphasised) {
      const [sx, sy] = screen(i);
      ctx.fillStyle = clusterColour(groupOf(i));
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

// ---------------------------------------------------------------- analyses

function missing(title, what) {
  show(el("h1", {}, title), el("p", { class: "muted" }, "This run has no " + what + "."));
}

async function renderFamilies(params) {
  const idx = await index();
  if (!idx.has.families) return missing("Families", "family of SAEs of different sizes (add a split stage)");
  const data = await analysisData(idx, "families");
  const s = idx.split;
  const only = params.has("root") ? Number(params.get("root")) : null;
  const shown = data.families.filter((f) => only === null || f.root === only);
  const memberTag = (member) => el("span", { class: "member-tag", style: "background:" + clusterColour(member * 3) }, memberName(s, member));
  function node(n) {
    const isMain = n.member === s.main;
    const link = n.link;
    return el("li", { class: "node", "data-member": n.member, "data-feature": n.feature },
      memberTag(n.member),
      isMain ? featureLink(n.feature) : "#" + n.feature, " ",
      isMain && labelOf(idx, n.feature) ? el("b", {}, labelOf(idx, n.feature)) : tokenList(n.top_tokens),
      el("span", { class: "muted" }, " · " + n.firings + " firings" +
        (link ? " · cosine " + linkValue(link.cosine, link.cosine_to, link.parent) + " · co-activation " +
          linkValue(link.coactivation, link.coactivation_to, link.parent) : "")),
      (n.children || []).length || n.more ? el("ul", { class: "tree" }, (n.children || []).map(node),
        n.more ? el("li", { class: "muted" }, "… and " + n.more + " more") : "") : "");
  }
  show(
    el("h1", {}, "Families"),
    el("p", {}, "SAEs of " + s.members.map((m) => String(m.name) + " (" + m.d_sae + ")").join(" → ") +
      " features, trained on the same activations. Each feature's parent is a feature of the next smaller SAE, by " +
      String(data.criterion) + " (co-activations counted on " + data.tokens + " tokens). " +
      data.split + " of " + data.roots + " features of the smallest SAE split into more than one feature of the largest; " +
      (only === null ? "the largest " + shown.length + " are below." : "")),
    only !== null ? el("p", {}, el("a", { href: "#/families" }, "← all families")) : "",
    only !== null && !shown.length ? el("p", { class: "muted" }, "Family " + only + " is not among the largest families listed here.") : "",
    shown.map((f) => el("section", { class: "family", id: "family-" + f.root },
      el("h2", {}, el("a", { href: "#/families?root=" + f.root }, "Family " + f.root), " ", tokenList(f.tree.top_tokens),
        el("span", { class: "muted" }, " " + f.sizes.join(" → ") + " features")),
      el("ul", { class: "tree root" }, node(f.tree)))),
  );
}

// Covered fraction against concept frequency, one line per dictionary size, drawn from the
// JSON as an SVG (the stage's own coverage.svg is not needed).
function coveragePlot(coverage) {
  const w = 640, h = 300, left = 48, right = 16, top = 12, bottom = 36;
  const bins = (coverage.bins || []).filter((b) => b.high > 0);
  const centre = (b) => Math.log10(b.low > 0 ? Math.sqrt(b.low * b.high) : b.high / 10);
  const xs = bins.map(centre);
  const lo = Math.floor(Math.min(...xs, 0)), hi = Math.ceil(Math.max(...xs, lo + 1));
  const px = (x) => left + ((x - lo) / (hi - lo || 1)) * (w - left - right);
  const py = (y) => top + (1 - y) * (h - top - bottom);
  const chart = svg("svg", { class: "plot", id: "coverage-plot", width: w, height: h, viewBox: "0 0 " + w + " " + h });
  const text = (x, y, anchor, value) => {
    const t = svg("text", { x, y, "text-anchor": anchor });
    t.textContent = value;
    chart.appendChild(t);
  };
  for (const y of [0, 0.25, 0.5, 0.75, 1]) {
    chart.appendChild(svg("line", { class: "grid", x1: left, x2: w - right, y1: py(y), y2: py(y) }));
    text(left - 6, py(y) + 4, "end", (100 * y).toFixed(0) + "%");
  }
  for (let e = lo; e <= hi; e++) {
    chart.appendChild(svg("line", { class: "axis", x1: px(e), x2: px(e), y1: h - bottom, y2: h - bottom + 4 }));
    text(px(e), h - bottom + 16, "middle", e >= 0 ? String(10 ** e) : (10 ** e).toPrecision(1));
  }
  chart.appendChild(svg("line", { class: "axis", x1: left, x2: w - right, y1: h - bottom, y2: h - bottom }));
  text((left + w - right) / 2, h - 4, "middle", "concept frequency (occurrences per million tokens)");
  coverage.members.forEach((mb, m) => {
    const colour = clusterColour(m * 3);
    const points = bins.map((b, i) => [px(xs[i]), py(b.covered_fraction[m])]);
    chart.appendChild(svg("polyline", { class: "coverage-line", fill: "none", stroke: colour, "stroke-width": 2,
      points: points.map((p) => p.join(",")).join(" ") }));
    bins.forEach((b, i) => {
      const dot = svg("circle", { cx: points[i][0], cy: points[i][1], r: 3.5, fill: colour });
      const title = svg("title", {});
      title.textContent = String(mb.name) + ": " + percent(b.covered_fraction[m]) + " of " + b.concepts + " concepts from " + fmt(b.low, 2) + " to " + fmt(b.high, 2) + " per million";
      dot.appendChild(title);
      chart.appendChild(dot);
    });
  });
  return el("div", {}, chart, el("div", { class: "plot-legend" }, coverage.members.map((mb, m) =>
    el("span", {}, el("span", { class: "member-tag", style: "background:" + clusterColour(m * 3) }, String(mb.name)), mb.d_sae + " features"))));
}

async function renderCoverage() {
  const idx = await index();
  if (!idx.has.coverage) return missing("Coverage", "concept coverage (add a coverage stage)");
  const coverage = await analysisData(idx, "coverage");
  const counts = coveredCounts(coverage);
  const total = coverage.concepts.length;
  const concepts = [...coverage.concepts].sort((a, b) => b.frequency_per_million - a.frequency_per_million || String(a.term).localeCompare(String(b.term)));
  show(
    el("h1", {}, "Coverage"),
    el("p", {}, "Which of " + total + " concepts some feature is specific to, per dictionary size, against how often the concept occurs (" +
      coverage.tokens + " tokens scanned). A concept is covered when " + String(coverage.criterion) + "."),
    el("ul", { id: "coverage-headline" }, coverage.members.map((mb, i) => el("li", {},
      String(mb.name) + " (" + mb.d_sae + " features): " + counts[i] + " of " + total + " concepts covered"))),
    coveragePlot(coverage),
    el("h2", {}, "Concepts"),
    el("table", { id: "coverage-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Concept"), el("th", {}, "Category"), el("th", { class: "num" }, "per million"),
        coverage.members.map((mb) => el("th", {}, String(mb.name) + " (" + mb.d_sae + ")")))),
      el("tbody", {}, concepts.map((c) => el("tr", { class: "concept" },
        el("td", {}, String(c.term)), el("td", {}, String(c.category)), el("td", { class: "num" }, fmt(c.frequency_per_million, 2)),
        c.best.map((b, m) => el("td", { title: "recall " + fmt(b.recall, 2) + " · precision " + fmt(b.precision, 2) },
          b.feature === null || b.feature === undefined ? el("span", { class: "muted" }, "none fires") :
            [m === coverage.main_member ? featureLink(b.feature) : "#" + b.feature, " ",
              b.covered ? el("span", { class: "yes" }, "✓ covered") : el("span", { class: "no" }, "✗")])))))),
  );
}

async function renderAttribution() {
  const idx = await index();
  if (!idx.has.attribution) return missing("Attribution", "attributions (ask the steer stage for them)");
  const data = await analysisData(idx, "attribution");
  show(
    el("h1", {}, "Attribution"),
    el("p", {}, "For each prompt, the (feature, position) pairs the target's log-probability rests on: attribution is the activation times the gradient " +
      "of the log-probability along the feature's decoder direction, so ablating the feature there is predicted to change the log-probability by minus it. " +
      "Beside it, the real change when the feature was clamped to 0 at that position."),
    data.map((a, n) => el("section", { class: "attribution", id: "attribution-" + n },
      el("h2", {}, "“" + String(a.prompt) + "” → “" + String(a.target) + "”"),
      el("p", {}, "log p(target | prompt) = " + fmt(a.target_logprob, 3) + " · ",
        el("span", { class: "sign-agreement" }, a.ablated ? "ablation agreed in sign for " + a.sign_agreements + " of " + a.ablated : "nothing was ablated")),
      el("div", { class: "tokens-strip" }, (a.tokens || []).map((t, i) => el("span", {
        class: "tok" + (i >= a.target_start ? " target" : ""),
        "data-tip": "position " + i + " · " + JSON.stringify(String(t)) + " · error-term attribution " + fmt((a.error_attribution || [])[i], 3),
      }, visibleToken(t)))),
      el("table", { class: "attribution-table" },
        el("thead", {}, el("tr", {}, ["#", "Feature", "Label", "Position", "Token"].map((x) => el("th", {}, x)),
          ["Activation", "Attribution", "Predicted ablation", "Real ablation"].map((x) => el("th", { class: "num" }, x)), el("th", {}, "Sign"))),
        el("tbody", {}, (a.entries || []).map((e, i) => {
          const real = e.ablation_effect;
          const ablated = real !== null && real !== undefined;
          const agrees = ablated && Math.sign(real) === -Math.sign(e.attribution);
          return el("tr", { class: "attribution-row" },
            el("td", {}, String(i + 1)), el("td", {}, featureLink(e.feature)), el("td", {}, entryLabel(idx, e)),
            el("td", { class: "num" }, String(e.position)), el("td", {}, el("span", { class: "tokens-inline" }, visibleToken((a.tokens || [])[e.position] ?? "?"))),
            el("td", { class: "num" }, fmt(e.activation, 2)), el("td", { class: "num" }, fmt(e.attribution, 3)),
            el("td", { class: "num" }, fmt(-e.attribution, 3)),
            el("td", { class: "num" }, ablated ? fmt(real, 3) : el("span", { class: "muted" }, "not ablated")),
            el("td", {}, ablated ? (agrees ? el("span", { class: "yes" }, "agrees") : el("span", { class: "no" }, "differs")) : ""));
        }))),
      el("h3", {}, "What the features miss: the error term's attribution per position"),
      el("table", { class: "error-table" },
        el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Position"), el("th", {}, "Token"), el("th", { class: "num" }, "Error-term attribution"))),
        el("tbody", {}, (a.error_attribution || []).map((v, i) => el("tr", { class: "error-row" },
          el("td", { class: "num" }, String(i)), el("td", {}, el("span", { class: "tokens-inline" }, visibleToken((a.tokens || [])[i] ?? ""))),
          el("td", { class: "num" }, fmt(v, 3)))))))),
  );
}

async function renderContrast() {
  const idx = await index();
  if (!idx.has.contrast) return missing("Contrast", "contrastive searches (ask the steer stage for them)");
  const data = await analysisData(idx, "contrast");
  show(
    el("h1", {}, "Contrastive searches"),
    el("p", {}, "Features that fire more on one set of texts than on another: per feature, the mean over texts of its peak activation on each set, " +
      "their difference ± Welch's standard error, ranked by the lower end of the 95% interval."),
    data.map((c, n) => el("section", { class: "contrast", id: "contrast-" + n },
      el("h2", {}, String(c.name)),
      el("p", { class: "muted" }, "positive: " + String(c.positive) + " (" + c.positive_texts + " texts) · negative: " +
        String(c.negative) + " (" + c.negative_texts + " texts)" +
        ((c.hits || []).some((h) => h.scaled) ? " · peaks as multiples of each feature's training maximum" : "")),
      el("table", { class: "contrast-table" },
        el("thead", {}, el("tr", {}, ["#", "Feature", "Label"].map((x) => el("th", {}, x)),
          ["Difference ± s.e.", "Lower bound", "Positive mean", "Negative mean", "Fires on positive", "Fires on negative"].map((x) => el("th", { class: "num" }, x)))),
        el("tbody", {}, (c.hits || []).map((h, i) => el("tr", { class: "contrast-hit" },
          el("td", {}, String(i + 1)), el("td", {}, featureLink(h.feature)), el("td", {}, entryLabel(idx, h)),
          el("td", { class: "num diff" }, fmt(h.difference, 3) + " ± " + fmt(h.standard_error, 3)),
          el("td", { class: "num" }, fmt(h.lower_bound, 3)), el("td", { class: "num" }, fmt(h.positive_mean, 3)),
          el("td", { class: "num" }, fmt(h.negative_mean, 3)), el("td", { class: "num" }, percent(h.positive_firing)),
          el("td", { class: "num" }, percent(h.negative_firing)))))))),
  );
}

// ---------------------------------------------------------------- router

const PAGES = ["features", "map", "steering", "families", "coverage", "attribution", "contrast"];

async function route() {
  delete document.body.dataset.ready;
  tooltip.hide();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  for (const name of PAGES) {
    document.getElementById("nav-" + name).classList.toggle("active", path.startsWith("/" + name) || (name === "features" && path.startsWith("/feature/")));
  }
  try {
    const idx = await index();
    for (const name of ["families", "coverage", "attribution", "contrast"]) document.getElementById("nav-" + name).hidden = !idx.has[name];
    if (path.startsWith("/feature/")) await renderFeature(Number(path.slice("/feature/".length)));
    else if (path.startsWith("/features")) await renderList(params);
    else if (path.startsWith("/map")) await renderMap(params);
    else if (path.startsWith("/steering")) await renderSteering();
    else if (path.startsWith("/families")) await renderFamilies(params);
    else if (path.startsWith("/coverage")) await renderCoverage();
    else if (path.startsWith("/attribution")) await renderAttribution();
    else if (path.startsWith("/contrast")) await renderContrast();
    else await renderHome();
    window.scrollTo(0, 0);
  } catch (error) {
    show(el("p", { class: "error" }, "Error: " + error.message));
  }
  document.body.dataset.ready = "1";
}

window.addEventListener("hashchange", route);
route();
