// Browser test of the dashboard in Debian's chromium, driven by playwright-core.
// Usage: node dashboard.mjs BASE_URL ARTIFACT_DIR CLUSTER HOST LATE_METRIC_CMD...
// Clicks grid → cluster → host → metric, checks that graphs draw the points the
// series API returns, that drag-zoom changes the range, and that a metric sent
// after the page opened appears without a reload. Screenshots go to ARTIFACT_DIR.
import { launch, fail } from "./launch.mjs";
import { execFileSync } from "node:child_process";

const [base, artifacts, cluster, host, ...lateCmd] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));

  // Grid view.
  await page.goto(base + "/#/?r=1h");
  await page.waitForSelector('[data-testid="cluster-card"]');
  await page.screenshot({ path: `${artifacts}/grid.png`, fullPage: true });

  // Click through to the cluster.
  await page.click(`[data-testid="cluster-card"] a:text-is("${cluster}")`);
  await page.waitForSelector('[data-testid="heatmap"] a');
  if (!page.url().includes(`#/cluster/${cluster}`)) fail("cluster URL: " + page.url());
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="chart"]')].some((c) => +c.dataset.points > 0), null, { timeout: 20000 });
  await page.screenshot({ path: `${artifacts}/cluster.png`, fullPage: true });

  // Host view via the heatmap.
  await page.click(`[data-testid="heatmap"] a[title^="${host}:"]`);
  await page.waitForSelector('[data-testid="host-state"]');
  if ((await page.textContent('[data-testid="host-state"]')) !== "up") fail("host should be up");
  await page.waitForSelector('[data-testid="host-strings"]');
  const chartSel = '[data-testid="chart"][data-metric="load_one"]';
  await page.waitForFunction((sel) => +document.querySelector(sel)?.dataset.points > 0, chartSel, { timeout: 20000 });
  await page.screenshot({ path: `${artifacts}/host.png`, fullPage: true });

  // The chart draws exactly the points the series API returns.
  const drawn = +(await page.getAttribute(chartSel, "data-points"));
  const url = new URL(page.url());
  const params = new URLSearchParams(url.hash.split("?")[1] || "");
  const now = Math.floor(Date.now() / 1000);
  const api = await page.evaluate(async ([c, h, now]) => {
    const r = await fetch(`/api/series?cluster=${c}&host=${h}&metric=load_one&start=${now - 3600}&end=${now}&points=600`);
    return r.json();
  }, [cluster, host, now]);
  const apiPoints = api.values[0].filter((v) => v !== null).length;
  if (Math.abs(apiPoints - drawn) > 2) fail(`chart shows ${drawn} points, API returns ${apiPoints}`);
  const plotted = await page.evaluate((sel) => document.querySelector(sel).querySelector("canvas") !== null, chartSel);
  if (!plotted) fail("no canvas drawn");

  // Drag to zoom: the range in the URL changes to an absolute window.
  const over = page.locator(`${chartSel} .u-over`);
  await over.scrollIntoViewIfNeeded();
  const box = await over.boundingBox();
  await page.mouse.move(box.x + box.width * 0.55, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.95, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction(() => location.hash.includes("start=") && location.hash.includes("end="));
  const z = new URLSearchParams(new URL(page.url()).hash.split("?")[1]);
  if (!(+z.get("end") > +z.get("start"))) fail("zoom range " + page.url());
  if (+z.get("end") - +z.get("start") >= 3600) fail("zoom did not narrow the range");
  await page.screenshot({ path: `${artifacts}/zoomed.png`, fullPage: true });

  // Metric (aggregate) view from the chart title.
  await page.click('button[data-range="1h"]');
  await page.click(`${chartSel} .title a`);
  await page.waitForFunction(() => location.hash.startsWith("#/metric/"));
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="chart"]')].some((c) => +c.dataset.points > 0), null, { timeout: 20000 });
  await page.screenshot({ path: `${artifacts}/metric.png`, fullPage: true });

  // Live: a metric sent after the page opened shows up without a reload.
  await page.goto(`${base}/#/host/${cluster}/${host}?r=1h&refresh=2`);
  await page.waitForSelector('[data-testid="host-state"]');
  const navs = [];
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navs.push(f.url()); });
  execFileSync(lateCmd[0], lateCmd.slice(1));
  await page.waitForSelector('[data-testid="chart"][data-metric="late_metric"]', { timeout: 20000 });
  if (navs.some((u) => !u.includes("#"))) fail("the page reloaded: " + navs.join(" "));
  await page.screenshot({ path: `${artifacts}/late-metric.png`, fullPage: true });
  console.log(`ok: ${drawn} points drawn, zoom ${z.get("start")}..${z.get("end")}`);
} finally {
  await browser.close();
}
