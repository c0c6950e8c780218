// Browser test of the alert views in Debian's chromium, driven by playwright-core.
// Usage: node alerts.mjs BASE_URL ARTIFACT_DIR CLUSTER DEAD_HOST HANDLER_TEXT
// Checks: the header counts a DOWN host; the problems view lists it; the
// events timeline shows the handler run with its stdout (as text, escaped);
// the host page shows its alert and its events; the cluster heatmap colours
// the dead host by state. Screenshots go to ARTIFACT_DIR.
import { launch, fail } from "./launch.mjs";

const [base, artifacts, cluster, dead, handlerText] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));

  await page.goto(base + "/#/problems");
  await page.waitForSelector('[data-testid="alert-counts"] [data-count="down"]');
  const down = await page.textContent('[data-testid="alert-counts"] [data-count="down"]');
  if (!/^[1-9]/.test(down)) fail("header should count a DOWN host, shows " + down);
  await page.waitForSelector(`[data-testid="problems"] tr[data-host="${dead}"]`);
  await page.screenshot({ path: `${artifacts}/alerts-problems.png`, fullPage: true });

  // The events timeline with the handler's output.
  await page.goto(base + `/#/events?kind=handler_run&host=${encodeURIComponent(dead)}`);
  await page.waitForSelector('[data-testid="handler-stdout"]');
  const out = await page.textContent('[data-testid="handler-stdout"]');
  if (!out.includes(handlerText)) fail(`handler stdout should contain ${JSON.stringify(handlerText)}, shows ${JSON.stringify(out)}`);
  // Markup in the output stays text: no element was made from it.
  const injected = await page.evaluate(() => document.querySelector('[data-testid="handler-stdout"] b') !== null);
  if (injected) fail("handler output was rendered as HTML");
  if (!(await page.textContent('[data-testid="handler-stderr"]')).length) fail("stderr not shown");
  await page.screenshot({ path: `${artifacts}/alerts-events.png`, fullPage: true });

  // The host page: its alert and its events, handler run included.
  await page.goto(base + `/#/host/${encodeURIComponent(cluster)}/${encodeURIComponent(dead)}`);
  await page.waitForSelector('[data-testid="host-alerts"] [data-testid="problems"]');
  await page.waitForSelector('[data-testid="host-alerts"] [data-testid="handler-run"]');
  await page.screenshot({ path: `${artifacts}/alerts-host.png`, fullPage: true });

  // The cluster page: the heatmap cell of the dead host is coloured by state.
  await page.goto(base + `/#/cluster/${encodeURIComponent(cluster)}`);
  await page.waitForSelector('[data-testid="cluster-alerts"]');
  const state = await page.getAttribute(`[data-testid="heatmap"] a[data-host="${dead}"]`, "data-state");
  if (state !== "DOWN") fail(`heatmap cell of ${dead} should be DOWN, is ${state}`);
  await page.screenshot({ path: `${artifacts}/alerts-cluster.png`, fullPage: true });
  console.log("ok");
} finally {
  await browser.close();
}
