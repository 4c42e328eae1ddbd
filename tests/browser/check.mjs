// Opens a monoscope feature browser site in headless Chromium and checks what a person would:
// search a label, open a feature page, see highlighted tokens with their activations and the
// neighbours, see an injected <script> in a context shown as text, open the map and the
// steering page. Saves a screenshot of each page.
//
// usage: node check.mjs --site DIR --query WORD [--shots DIR] [--script-feature N] [--script-text TEXT]
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
  check("no errors in the page", errors.length === 0, errors.join(" | "));
} catch (e) {
  check("the browser run completed", false, String(e && e.stack || e));
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
