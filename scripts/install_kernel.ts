/**
 * Installs the "nbtune" Jupyter kernelspec (`deno task kernel:install`).
 *
 * Reads the template kernels/nbtune/kernel.json, puts the absolute path of the project's Deno binary
 * (.tools/node_modules/.bin/deno, else the Deno running this script) into argv[0], and installs it:
 *
 * - `--prefix DIR`: writes DIR/kernels/nbtune/ (DIR is a Jupyter data dir: select it with
 *   `JUPYTER_PATH=DIR`; this is what CI does);
 * - otherwise with `jupyter kernelspec install --user --name nbtune` when `jupyter` is on the PATH;
 * - otherwise into the user's Jupyter data dir ($JUPYTER_DATA_DIR, ~/.local/share/jupyter on Linux,
 *   ~/Library/Jupyter on macOS, %APPDATA%\jupyter on Windows) under kernels/nbtune/.
 *
 * Usage: deno task kernel:install [--prefix DIR] [--name NAME] [--display-name TEXT] (see --help)
 * @module
 */
import { CliUsageError, defineCli, runCli } from "./_cli.ts";

const ROOT = new URL("..", import.meta.url);
const TEMPLATE_DIR = new URL("kernels/nbtune/", ROOT);
const FILES = ["logo-32x32.png", "logo-64x64.png"];

interface Args {
  prefix?: string;
  name: string;
  displayName: string;
}

const KERNEL_CLI = defineCli({
  name: "kernel:install",
  summary: 'Installs the Jupyter kernelspec "Deno (nbtune)", which runs this project\'s pinned Deno ' +
    "(deno jupyter --kernel); with jupyter on the PATH through `jupyter kernelspec install --user`, " +
    "else into the user's Jupyter data dir.",
  usage: "deno task kernel:install [options]",
  options: {
    prefix: {
      type: "string",
      placeholder: "DIR",
      description: "write DIR/kernels/NAME/ instead (select it with JUPYTER_PATH=DIR; what CI does)",
      defaultText: "jupyter kernelspec install --user, else the user's Jupyter data dir",
      example: "--prefix out/jupyter",
    },
    name: {
      type: "string",
      default: "nbtune",
      description: "kernelspec name, [A-Za-z0-9._-]",
      example: "--name nbtune-dev",
    },
    "display-name": {
      type: "string",
      default: "Deno (nbtune)",
      description: "name shown in Jupyter's kernel picker",
      example: '--display-name "Deno (nbtune dev)"',
    },
  },
  examples: ["deno task kernel:install", "deno task kernel:install --prefix out/jupyter"],
});

function fromFileUrl(url: URL): string {
  const path = decodeURIComponent(url.pathname);
  return Deno.build.os === "windows" ? path.slice(1).replaceAll("/", "\\") : path;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The project's pinned Deno (kept as the .bin path so upgrades of .tools keep working), else this Deno. */
function denoBinary(): string {
  const bin = Deno.build.os === "windows"
    ? ".tools/node_modules/.bin/deno.cmd"
    : ".tools/node_modules/.bin/deno";
  const local = fromFileUrl(new URL(bin, ROOT));
  return exists(local) ? local : Deno.execPath();
}

function userDataDir(): string {
  const env = (name: string) => Deno.env.get(name) || undefined;
  const explicit = env("JUPYTER_DATA_DIR");
  if (explicit) return explicit;
  const home = env("HOME") ?? env("USERPROFILE") ?? "";
  switch (Deno.build.os) {
    case "darwin":
      return `${home}/Library/Jupyter`;
    case "windows":
      return `${env("APPDATA") ?? home}\\jupyter`;
    default:
      return `${env("XDG_DATA_HOME") ?? `${home}/.local/share`}/jupyter`;
  }
}

async function writeSpec(dir: string, args: Args): Promise<void> {
  const template = JSON.parse(await Deno.readTextFile(new URL("kernel.json", TEMPLATE_DIR)));
  const spec = {
    argv: [denoBinary(), ...template.argv.slice(1)],
    display_name: args.displayName,
    language: template.language,
    env: template.env,
  };
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/kernel.json`, JSON.stringify(spec, null, 2) + "\n");
  for (const file of FILES) await Deno.copyFile(new URL(file, TEMPLATE_DIR), `${dir}/${file}`);
}

async function hasJupyter(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("jupyter", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return success;
  } catch {
    return false;
  }
}

async function main(args: Args): Promise<void> {
  let installed: string;
  if (args.prefix !== undefined) {
    installed = `${args.prefix.replace(/[\\/]+$/, "")}/kernels/${args.name}`;
    await writeSpec(installed, args);
  } else if (await hasJupyter()) {
    const tmp = await Deno.makeTempDir({ prefix: "nbtune-kernel-" });
    try {
      await writeSpec(tmp, args);
      const out = await new Deno.Command("jupyter", {
        args: ["kernelspec", "install", "--user", "--name", args.name, tmp],
        env: { PYDEVD_DISABLE_FILE_VALIDATION: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      if (!out.success) throw new Error(`jupyter kernelspec install failed:\n${text}`);
      installed = /Installed kernelspec \S+ in (.+)/.exec(text)?.[1]?.trim() ??
        `(jupyter user dir)/kernels/${args.name}`;
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  } else {
    installed = `${userDataDir()}/kernels/${args.name}`;
    await writeSpec(installed, args);
  }
  console.log(`Installed kernelspec "${args.name}" (${args.displayName}) in ${installed}`);
  console.log(`  runs: ${denoBinary()} jupyter --kernel --conn {connection_file}`);
  if (args.prefix !== undefined) {
    console.log(
      `Select it with: export JUPYTER_PATH=${args.prefix}${
        Deno.build.os === "windows" ? ";" : ":"
      }$JUPYTER_PATH`,
    );
  }
  console.log(
    `In Jupyter pick the kernel "${args.displayName}"; headless: ` +
      `/usr/bin/python3 scripts/run_notebooks.py --kernel ${args.name} notebooks/`,
  );
}

if (import.meta.main) {
  await runCli(KERNEL_CLI, ({ values }) => {
    if (!/^[a-z0-9._-]+$/i.test(values.name)) {
      throw new CliUsageError(`--name must be [A-Za-z0-9._-]; got "${values.name}"`);
    }
    return main({ prefix: values.prefix, name: values.name, displayName: values["display-name"] });
  });
}
