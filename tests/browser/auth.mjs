// The dashboard behind HTTP basic auth (and TLS with a self-signed
// certificate) in Debian's chromium, driven by playwright-core.
// Usage: node auth.mjs BASE_URL ARTIFACT_DIR CLUSTER USER PASSWORD
// Without credentials the page is refused (401 with a Basic challenge); with
// them the grid, the cluster view and its graphs load, and the page's own
// API calls are answered.
import { launch, fail } from "./launch.mjs";

const [base, artifacts, cluster, username, password] = process.argv.slice(2);

const browser = await launch();
try {
  // No credentials: the server says who may come in, and nothing else.
  const anon = await browser.newContext({ ignoreHTTPSErrors: true });
  const anonPage = await anon.newPage();
  // Chromium either shows the 401 page or gives up on the challenge it
  // cannot answer, depending on the version.
  const refused = await anonPage.goto(base + "/").then((r) => String(r.status()), (e) => e.message);
  if (refused !== "401" && !refused.includes("ERR_INVALID_AUTH_CREDENTIALS")) fail("without credentials: " + refused);
  const raw = await anon.request.get(base + "/");
  if (raw.status() !== 401) fail("without credentials, the raw answer: " + raw.status());
  const challenge = raw.headers()["www-authenticate"] || "";
  if (!challenge.startsWith("Basic realm=\"ganglion\"")) fail("challenge: " + challenge);
  await anon.close();

  // Wrong password: still refused.
  const wrong = await browser.newContext({ ignoreHTTPSErrors: true, httpCredentials: { username, password: password + "x" } });
  const wrongPage = await wrong.newPage();
  // Chromium gives up once the server refuses the credentials it offered.
  const denied = await wrongPage.goto(base + "/").then((r) => String(r.status()), (e) => e.message);
  if (denied !== "401" && !denied.includes("ERR_INVALID_AUTH_CREDENTIALS")) fail("wrong password: " + denied);
  await wrong.close();

  const ctx = await browser.newContext({
    ignoreHTTPSErrors: true,
    httpCredentials: { username, password },
    viewport: { width: 1400, height: 1000 },
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => fail("page error: " + e.message));
  const failed = [];
  page.on("response", (r) => { if (r.status() === 401 || r.status() >= 500) failed.push(`${r.status()} ${r.url()}`); });

  const first = await page.goto(base + "/#/?r=1h");
  if (first.status() !== 200) fail("with credentials: status " + first.status());
  await page.waitForSelector('[data-testid="cluster-card"]');
  await page.click(`[data-testid="cluster-card"] a:text-is("${cluster}")`);
  await page.waitForSelector('[data-testid="heatmap"] a');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="chart"]')].some((c) => +c.dataset.points > 0), null, { timeout: 20000 });
  await page.screenshot({ path: `${artifacts}/auth-cluster.png`, fullPage: true });

  // The page's own fetches carry the credentials too.
  const api = await page.evaluate(async () => (await fetch("/api/grid")).status);
  if (api !== 200) fail("fetch /api/grid from the page: " + api);
  // Playwright answers each challenge, so a 401 may be seen before the
  // authenticated retry; a 5xx never should be.
  const errors = failed.filter((f) => !f.startsWith("401 "));
  if (errors.length) fail("failed responses: " + errors.join(", "));
  console.log(JSON.stringify({ ok: true, challenged: failed.length }));
} finally {
  await browser.close();
}
