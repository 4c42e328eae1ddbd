// Opens a monoscope feature browser site in headless Chromium and checks what a person would:
// search a label, open a feature page, see highlighted tokens with their activations and the
// neighbours, see an injected <script> in a context shown as text, open the map and the
// steering page; and for the analyses the site has (all of them, or those named by
// --analyses, which must be there): the overview leads with them, the families tree, a feature
// page's parents and children, the coverage plot and table, the attribution tables with their
// sign agreement, the contrastive searches' hits, the map coloured by family. What each page
// must show is read from the site's own data. Saves a screenshot of each page.
//
// usage: node check.mjs --site DIR --query WORD [--shots DIR] [--script-feature N] [--script-text TEXT]
//                       [--analyses families,coverage,attribution,contrast]
import { chromium } from "playwright-core";
import { pathToFileURL } from "node:url";
import { mkdirSync } from "node:fs";
import path from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
if (!args.site || !args.query) {
  console.error("usage: node check.mjs --site DIR --query WORD [--shots DIR] [--script-feature N] [--script-text TEXT]");
  process.exit(2);
}
const site = pathToFileURL(path.resolve(args.site, "index.html")).href;
const shots = args.shots ? path.resolve(args.shots) : null;
if (shots) mkdirSync(shots, { recursive: true });

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log((ok ? "ok   " : "FAIL ") + name + (ok || !detail ? "" : ": " + detail));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

async function open(hash) {
  await page.goto(site + hash);
  await page.waitForSelector("body[data-ready='1']", { timeout: 30000 });
}
async function shot(name) {
  if (shots) await page.screenshot({ path: path.join(shots, name), fullPage: false });
}

// The site's own data, as the page loaded it.
function siteData(name) {
  return page.evaluate((n) => (n === "index" ? index() : monoscope.load(n, "data/" + n + ".js")), name);
}

async function noInjection(where) {
  const scripts = await page.locator("#main script").count();
  const pwned = await page.evaluate(() => document.body.dataset.pwned || null);
  check(`${where}: no script element was created and none ran`, scripts === 0 && pwned === null, `${scripts} ${pwned}`);
}

async function checkAnalyses() {
  await open("#/");
  const idx = await siteData("index");
  const required = (args.analyses || "").split(",").filter(Boolean);
  for (const name of required) check(`the site has ${name}`, idx.has[name] === true, JSON.stringify(idx.has));
  const present = ["families", "coverage", "attribution", "contrast"].filter((n) => idx.has[n]);
  if (!present.length) {
    console.log("skip the analyses: the site has none");
    return;
  }

  // The overview leads with what was found; the best-scored labels come after it, and only
  // labels with words.
  const order = await page.evaluate(() => {
    const findings = document.getElementById("findings");
    const cards = document.querySelector("#main .cards");
    const best = document.getElementById("best-labels");
    const before = (a, b) => !!(a && b && (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING));
    const labels = [...document.querySelectorAll("#feature-table .label-cell")].map((c) => c.textContent);
    return {
      first: document.querySelector("#main h2") && document.querySelector("#main h2").textContent,
      beforeCards: before(findings, cards),
      beforeBest: !best || before(findings, best),
      wordless: labels.filter((l) => !/\p{L}/u.test(l)),
      findings: [...document.querySelectorAll("#findings .finding")].map((f) => f.id),
    };
  });
  check("the overview leads with what the run found", order.first === "What this run found" && order.beforeCards && order.beforeBest, JSON.stringify(order));
  check("the overview summarises each analysis", present.every((n) => order.findings.includes("finding-" + n)), JSON.stringify(order.findings));
  check("the overview's best-scored labels all have words", order.wordless.length === 0, JSON.stringify(order.wordless));
  const recognisable = await page.locator("#recognisable .recognisable-feature a.feature-link").count();
  check("the overview names features to start with", recognisable > 0, `${recognisable}`);
  await shot("overview.png");

  if (idx.has.families) {
    const families = await siteData("families");
    await open("#/families");
    const shown = await page.locator("section.family").count();
    check("the families page lists the largest families", shown === families.families.length && shown > 0, `${shown} of ${families.families.length}`);
    const members = await page.evaluate(() => new Set([...document.querySelectorAll("section.family li.node")].map((n) => n.dataset.member)).size);
    check("a family tree reaches through every size", members === idx.split.members.length, `${members} of ${idx.split.members.length}`);
    const mainLinks = await page.locator(`section.family li.node[data-member='${idx.split.main}'] > a.feature-link`).count();
    check("the site's own features in a tree link to their pages", mainLinks > 0, `${mainLinks}`);
    await noInjection("the families page");
    await shot("families.png");

    // A feature page of a feature with a parent and children.
    let id = args["script-feature"] !== undefined ? Number(args["script-feature"]) : null;
    if (id === null) {
      const [first] = families.families;
      id = (function find(n) {
        if (n.member === idx.split.main) return n.feature;
        for (const c of n.children || []) { const f = find(c); if (f !== undefined) return f; }
        return undefined;
      })(first.tree);
    }
    await open("#/feature/" + id);
    const parents = await page.locator("#split-parents .split-parent").count();
    const children = await page.locator("#split-children .split-child").count();
    check("a feature page lists its parents in the smaller SAEs", parents === idx.split.main, `${parents} for feature ${id}`);
    check("a feature page lists its children in the larger SAEs", idx.split.main + 1 === idx.split.members.length || children > 0, `${children} for feature ${id}`);
    if (args["script-text"]) {
      const text = await page.textContent("#split-children");
      check("a <script> in a child's top tokens is shown as text", text.includes(args["script-text"]), text.slice(0, 200));
    }
    await noInjection("the feature page's split section");
    await page.locator("#split-parents").scrollIntoViewIfNeeded();
    await shot("feature-split.png");

    await open("#/map");
    if (await page.locator("#map-colour").count()) {
      await page.selectOption("#map-colour", "family");
      const caption = await page.textContent("#map-caption");
      const legend = await page.textContent("#map-legend");
      check("the map can colour points by family", caption.includes("coloured by family") && legend.includes("family "), caption + " | " + legend.slice(0, 100));
      await shot("map-families.png");
    } else {
      check("the map can colour points by family", !idx.has.map, "no colour choice on the map");
    }
  }

  if (idx.has.coverage) {
    const coverage = await siteData("coverage");
    await open("#/coverage");
    const lines = await page.locator("svg#coverage-plot polyline.coverage-line").count();
    check("the coverage plot has a line per dictionary size", lines === coverage.members.length, `${lines} of ${coverage.members.length}`);
    const rows = await page.locator("#coverage-table tr.concept").count();
    check("the coverage table has a row per concept", rows === coverage.concepts.length, `${rows} of ${coverage.concepts.length}`);
    const headline = await page.textContent("#coverage-headline");
    check("the coverage page gives each size's count", coverage.members.every((m) => headline.includes(m.name + " (" + m.d_sae + " features)")), headline);
    await noInjection("the coverage page");
    await shot("coverage.png");
  }

  if (idx.has.attribution) {
    const attribution = await siteData("attribution");
    await open("#/attribution");
    for (const [n, a] of attribution.entries()) {
      const rows = await page.locator(`#attribution-${n} .attribution-table .attribution-row`).count();
      check(`attribution ${n}: a row per (feature, position)`, rows === a.entries.length, `${rows} of ${a.entries.length}`);
      const sign = await page.textContent(`#attribution-${n} .sign-agreement`);
      const expected = a.ablated ? `ablation agreed in sign for ${a.sign_agreements} of ${a.ablated}` : "nothing was ablated";
      check(`attribution ${n}: the sign agreement`, sign === expected, sign);
      const notAblated = a.entries.filter((e) => e.ablation_effect === null).length;
      const shownNot = await page.locator(`#attribution-${n} .attribution-row td:has-text("not ablated")`).count();
      check(`attribution ${n}: entries without an ablation say so`, shownNot === notAblated, `${shownNot} of ${notAblated}`);
      const errorRows = await page.locator(`#attribution-${n} .error-table .error-row`).count();
      check(`attribution ${n}: the error term per position`, errorRows === a.error_attribution.length, `${errorRows}`);
    }
    await noInjection("the attribution page");
    await shot("attribution.png");
  }

  if (idx.has.contrast) {
    const contrast = await siteData("contrast");
    await open("#/contrast");
    const hits = await page.locator(".contrast-table .contrast-hit").count();
    const total = contrast.reduce((n, c) => n + c.hits.length, 0);
    check("the contrast page lists every hit", hits === total, `${hits} of ${total}`);
    if (total) {
      const diff = await page.textContent("#contrast-0 .contrast-hit td.diff");
      check("a hit shows its difference ± its standard error", /^-?[\d.]+ ± [\d.]+$/.test(diff.trim()), diff);
    }
    await noInjection("the contrast page");
    await shot("contrast.png");
  }
}

try {
  // The overview names the explainer as the label stage wrote it (a plain string).
  await open("#/");
  const home = await page.textContent("#main");
  const explainer = /explainer: ([^)]*)\)/.exec(home);
  check("the overview names the explainer as text", explainer !== null && !explainer[1].startsWith('"'), home.slice(0, 300));

  // The feature list, searched by a label word.
  await open("#/features");
  await shot("feature-list.png");
  await page.fill("#search", args.query);
  await page.waitForFunction(
    (q) => [...document.querySelectorAll("#feature-table .label-cell")].length > 0 &&
      [...document.querySelectorAll("#feature-table .label-cell")].every((c) => c.textContent.toLowerCase().includes(q.toLowerCase())),
    args.query, { timeout: 10000 },
  ).then(() => check("search shows only features whose label matches", true))
    .catch((e) => check("search shows only features whose label matches", false, String(e)));
  const count = await page.textContent("#count");
  check("search reports a count", /\d+ features/.test(count), count);
  await shot("feature-search.png");

  // A feature page, opened by clicking the first result.
  const firstLabel = (await page.textContent("#feature-table .label-cell")).trim();
  await page.click("#feature-table .feature-link");
  await page.waitForFunction(() => location.hash.startsWith("#/feature/") && document.body.dataset.ready === "1");
  const label = (await page.textContent("#feature-label")).trim();
  check("the feature page shows the label that was clicked", label === firstLabel, `${label} vs ${firstLabel}`);
  const firing = await page.locator("#top-contexts .tok.fires").count();
  check("top contexts have highlighted firing tokens", firing > 0, `${firing}`);
  const neighbours = await page.locator("#neighbours .neighbour").count();
  check("the feature page lists neighbours", neighbours > 0, `${neighbours}`);
  await page.hover("#top-contexts .tok.fires >> nth=0");
  const tip = await page.textContent("#tooltip");
  const tipVisible = await page.isVisible("#tooltip");
  check("hovering a token shows its activation", tipVisible && /activation \d/.test(tip), tip);
  await page.mouse.move(0, 0);
  await shot("feature-page.png");

  // Untrusted text stays text.
  if (args["script-feature"]) {
    await open("#/feature/" + args["script-feature"]);
    const text = await page.textContent("#top-contexts");
    check("an injected <script> in a context is shown as text", text.includes(args["script-text"] || "<script>"), text.slice(0, 200));
    const scripts = await page.locator("#main script").count();
    check("no script element was created from the data", scripts === 0, `${scripts}`);
    const pwned = await page.evaluate(() => document.body.dataset.pwned || null);
    check("the injected script did not run", pwned === null, pwned);
  }

  // The map and the steering page.
  await open("#/map");
  const canvas = await page.locator("canvas#map").count();
  check("the map page draws a canvas", canvas === 1, `${canvas}`);
  if (canvas) {
    await shot("map.png");
    const box = await page.locator("canvas#map").boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.wheel(0, -300);
  }
  await open("#/steering");
  await shot("steering.png");

  await checkAnalyses();
  check("no errors in the page", errors.length === 0, errors.join(" | "));
} catch (e) {
  check("the browser run completed", false, String(e && e.stack || e));
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
