// Cluster view of a large cluster in Debian's chromium: how long from
// navigation until the page is usable (heatmap of every host, summary graphs
// and the first page of small multiples drawn), and sorting by value.
// Usage: node cluster1000.mjs BASE_URL ARTIFACT_DIR CLUSTER HOSTS
// Prints one JSON line with the timings (ms); the Rust test records them.
import { launch, fail } from "./launch.mjs";

const [base, artifacts, cluster, hostsArg] = process.argv.slice(2);
const hosts = +hostsArg;

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  // Warm the browser's own caches (fonts, JS compile) on another view, as a
  // user arriving from the grid page would have.
  await page.goto(base + "/#/?r=1h");
  await page.waitForSelector('[data-testid="cluster-card"]');

  const runs = [];
  for (let run = 0; run < 3; run++) {
    await page.goto("about:blank");
    const t0 = Date.now();
    await page.goto(`${base}/#/cluster/${cluster}?r=1h`);
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="heatmap"] a').length === n, hosts, { timeout: 30000, polling: 10 });
    const heatmap = Date.now() - t0;
    // Every chart on the page has its answer drawn (data-points is set once
    // the series API answered and the plot or "no data" was rendered).
    await page.waitForFunction(() => {
      const charts = [...document.querySelectorAll('[data-testid="chart"]')];
      return charts.length > 0 && charts.every((c) => c.dataset.points !== undefined);
    }, null, { timeout: 30000, polling: 10 });
    const graphs = Date.now() - t0;
    const charts = await page.locator('[data-testid="chart"]').count();
    runs.push({ heatmap_ms: heatmap, all_graphs_ms: graphs, charts });
  }
  await page.screenshot({ path: `${artifacts}/cluster-${hosts}.png` });

  // Small multiples sorted by value: the first host shown has the highest load.
  await page.goto(`${base}/#/cluster/${cluster}?r=1h&m=load_one&sort=value`);
  await page.waitForFunction(() => document.querySelectorAll('.charts.small [data-testid="chart"]').length > 0);
  const first = await page.locator('.charts.small [data-testid="chart"] .title a').first().textContent();
  const c = await page.evaluate(async (cl) => (await fetch(`/api/cluster/${cl}?metric=load_one`)).json(), cluster);
  const best = Math.max(...c.hosts.map((h) => h.value ?? -Infinity));
  const firstHost = c.hosts.find((h) => h.name === first);
  if (!firstHost || firstHost.value !== best) fail(`sorted by value, first is ${first} (${firstHost?.value}), max is ${best}`);
  console.log(JSON.stringify({ hosts, runs }));
} finally {
  await browser.close();
}
