/**
 * A static server for the push page: `page/index.html`, the bundle `dist/page.js`, and
 * `config.json?reader=ID` from the `configs` map (one per reader). For the demo and its
 * test; any static web server does the same.
 */
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** Serves the page on 127.0.0.1:`port` (0: any); resolves to the server. */
export function servePage(configs, port = 0) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    try {
      if (url.pathname === "/" || url.pathname === "/index.html") {
        res.setHeader("Content-Type", "text/html");
        res.end(await readFile(join(here, "page", "index.html")));
      } else if (url.pathname === "/page.js") {
        res.setHeader("Content-Type", "text/javascript");
        res.end(await readFile(join(here, "dist", "page.js")));
      } else if (url.pathname === "/config.json" && configs[url.searchParams.get("reader")]) {
        res.setHeader("Content-Type", "application/json");
        res.end(JSON.stringify(configs[url.searchParams.get("reader")]));
      } else {
        res.statusCode = 404;
        res.end("not found");
      }
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
    }
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}
