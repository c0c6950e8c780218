// Shared by the browser tests: Debian's chromium through playwright-core, and
// a fail() that ends the run with a message the Rust test shows.
import { chromium } from "playwright-core";

export const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
