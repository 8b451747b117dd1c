/**
 * Finds and reads plotly.min.js from the `plotly.js-dist-min` npm package (private).
 *
 * Looked up in order: `$NBTUNE_PLOTLY_JS`; the import map (`import.meta.resolve`, which gives the file in
 * `node_modules` when deno.json has `"nodeModulesDir": "auto"`); `node_modules/plotly.js-dist-min` above
 * the working directory and above this module; Deno's npm cache (`$DENO_DIR/npm/registry.npmjs.org`).
 * @module
 */

const PACKAGE = "plotly.js-dist-min";
const FILE = "plotly.min.js";
/** The version deno.json pins; any cached version is accepted after it. */
const PINNED = "3.7.0";

let cached: { source: string; version: string; path: string } | undefined;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

function fileUrlToPath(url: string): string {
  const path = decodeURIComponent(new URL(url).pathname);
  return Deno.build.os === "windows" ? path.slice(1).replaceAll("/", "\\") : path;
}

function parentDirs(start: string): string[] {
  const dirs: string[] = [];
  let dir = start.replace(/[\\/]+$/, "");
  while (dir !== "") {
    dirs.push(dir);
    const up = dir.replace(/[\\/][^\\/]*$/, "");
    if (up === dir) break;
    dir = up;
  }
  return dirs;
}

function denoDir(): string | undefined {
  const explicit = env("DENO_DIR");
  if (explicit) return explicit;
  const home = env("HOME") ?? env("USERPROFILE");
  switch (Deno.build.os) {
    case "darwin":
      return home && `${home}/Library/Caches/deno`;
    case "windows":
      return env("LOCALAPPDATA") && `${env("LOCALAPPDATA")}\\deno`;
    default:
      return env("XDG_CACHE_HOME") ? `${env("XDG_CACHE_HOME")}/deno` : home && `${home}/.cache/deno`;
  }
}

function candidates(): string[] {
  const out: string[] = [];
  const explicit = env("NBTUNE_PLOTLY_JS");
  if (explicit) out.push(explicit);
  try {
    const url = import.meta.resolve(`${PACKAGE}/${FILE}`);
    if (url.startsWith("file:")) out.push(fileUrlToPath(url));
  } catch {
    // Not in the import map of the running program.
  }
  const starts: string[] = [];
  try {
    starts.push(Deno.cwd());
  } catch { /* no read permission */ }
  if (import.meta.url.startsWith("file:")) starts.push(fileUrlToPath(new URL(".", import.meta.url).href));
  for (const start of starts) {
    for (const dir of parentDirs(start)) out.push(`${dir}/node_modules/${PACKAGE}/${FILE}`);
  }
  const cache = denoDir();
  if (cache) {
    const root = `${cache}/npm/registry.npmjs.org/${PACKAGE}`;
    out.push(`${root}/${PINNED}/${FILE}`);
    try {
      for (const entry of Deno.readDirSync(root)) out.push(`${root}/${entry.name}/${FILE}`);
    } catch { /* not cached */ }
  }
  return out;
}

/** The plotly.js source and version; throws an Error saying how to install it when it cannot be found. */
export function plotlyJs(): { source: string; version: string; path: string } {
  if (cached) return cached;
  const tried = candidates();
  for (const path of tried) {
    let source: string;
    try {
      source = Deno.readTextFileSync(path);
    } catch {
      continue;
    }
    const version = /plotly\.js v(\d+\.\d+\.\d+\S*)/.exec(source.slice(0, 500))?.[1] ?? "unknown";
    return cached = { source, version, path };
  }
  throw new Error(
    `Cannot find ${PACKAGE}/${FILE}. Run \`deno install\` in the project root (deno.json maps ` +
      `"${PACKAGE}" to npm:${PACKAGE}@${PINNED}), or set NBTUNE_PLOTLY_JS to the path of plotly.min.js. ` +
      `Tried: ${[...new Set(tried)].slice(0, 6).join(", ")}${tried.length > 6 ? ", …" : ""}`,
  );
}
