/**
 * Headless Chromium (Debian's, through playwright-core) on a page that loads one esbuild
 * bundle of `entry`, served from a loopback port: what the browser test and the browser
 * benchmark both need. The flags keep Chromium off the (closed) network.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A page and how to reload it and shut everything down. */
export interface BundledPage {
  page: Page;
  /** Loads (again) the page, and waits until `ready` holds in it. */
  load(ready: () => boolean): Promise<void>;
  close(): Promise<void>;
}

/** Bundles `entry` (a path under the package) for the browser and opens it in Chromium. */
export async function openBundledPage(entry: string): Promise<BundledPage> {
  const bundle = join(root, "dist", "bundles", `${basename(entry, ".ts")}.js`);
  execFileSync("npx", [
    "esbuild",
    join(root, entry),
    "--bundle",
    "--format=esm",
    "--platform=browser",
    "--target=es2022",
    `--outfile=${bundle}`,
    "--log-level=warning",
  ]);
  const js = readFileSync(bundle);
  const server = createServer((req, res) => {
    const script = req.url === "/t.js";
    res.setHeader("Content-Type", script ? "text/javascript" : "text/html");
    res.end(script ? js : '<!doctype html><script type="module" src="/t.js"></script>');
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const address = server.address();
  const url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`;
  let browser: Browser | undefined;
  try {
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  } catch (e) {
    server.close();
    throw e;
  }
  const page = await (await browser.newContext()).newPage();
  const opened = browser;
  return {
    page,
    async load(ready) {
      await page.goto(url);
      await page.waitForFunction(ready);
    },
    async close() {
      await opened.close();
      server.close();
    },
  };
}
