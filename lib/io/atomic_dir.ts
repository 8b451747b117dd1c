/**
 * Atomic folder saves: a save is written into `<dir>.tmp-<id>` next to its destination,
 * every file and the folder are fsynced, and the folder is renamed into place. An
 * existing save is first renamed aside to `<dir>.old-<id>`, the new one renamed in, and
 * the old one removed, with the parent folder fsynced after each rename. A kill at any
 * moment therefore leaves either the previous complete save or the new one at `dir`,
 * never a mix of files from both:
 *
 * ```text
 * killed while writing tmp        → dir = previous save, tmp is a leftover
 * killed after dir → old          → dir missing, old = previous save (restored by the next save/load)
 * killed after tmp → dir          → dir = new save, old is a leftover
 * ```
 *
 * {@linkcode recoverInterruptedSave} (run by every save and by the loaders) restores the
 * previous save in the second case and removes leftovers. Two processes saving into the
 * same destination at once are not supported: each would treat the other's temporary
 * folder as a leftover.
 * @module
 */

/** Marks the temporary folder of a save in progress. */
export const TMP_MARK = ".tmp-";
/** Marks a previous save renamed aside while the new one moves in. */
export const OLD_MARK = ".old-";

function split(dir: string): { parent: string; base: string } {
  const clean = dir.replace(/\/+$/, "") || "/";
  const i = clean.lastIndexOf("/");
  return i < 0
    ? { parent: ".", base: clean }
    : { parent: i === 0 ? "/" : clean.slice(0, i), base: clean.slice(i + 1) };
}

/** Whether `path` is a regular file (following links); other errors than NotFound are thrown. */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Whether `path` exists (a dangling link counts); other errors than NotFound are thrown. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** fsyncs a file or folder (folders: so that renames and new entries in it are durable). */
export async function fsyncPath(path: string): Promise<void> {
  const f = await Deno.open(path, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

/** fsyncs every file under `dir` and then every folder, deepest first. */
async function fsyncTree(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) await fsyncTree(p);
    else if (e.isFile) await fsyncPath(p);
  }
  await fsyncPath(dir);
}

/** Permission refused by the OS or by Deno's permission flags. */
function isPermissionError(e: unknown): boolean {
  const notCapable = (Deno.errors as unknown as { NotCapable?: ErrorConstructor }).NotCapable;
  return e instanceof Deno.errors.PermissionDenied || (notCapable !== undefined && e instanceof notCapable);
}

/** Leftovers of interrupted saves into `dir`: `{ tmp: [...], old: [...] }` (full paths). */
export async function interruptedSaves(dir: string): Promise<{ tmp: string[]; old: string[] }> {
  const { parent, base } = split(dir);
  const tmp: string[] = [], old: string[] = [];
  try {
    for await (const e of Deno.readDir(parent)) {
      if (e.name.startsWith(base + TMP_MARK)) tmp.push(`${parent}/${e.name}`);
      else if (e.name.startsWith(base + OLD_MARK)) old.push(`${parent}/${e.name}`);
    }
  } catch (e) {
    // A parent the process may not list (a read permission for the model folder only) has
    // nothing this process could clean up: loading must still work.
    if (!(e instanceof Deno.errors.NotFound) && !isPermissionError(e)) throw e;
  }
  return { tmp: tmp.sort(), old: old.sort() };
}

/**
 * Throws a RangeError when `dir` is itself the temporary or set-aside folder of a save
 * (its name holds `.tmp-` or `.old-`): such a folder may be half-written.
 */
export function refuseInterruptedSave(dir: string, what: string): void {
  const { base } = split(dir);
  for (const mark of [TMP_MARK, OLD_MARK]) {
    const i = base.lastIndexOf(mark);
    if (i > 0) {
      throw new RangeError(
        `${what}: ${dir} is the ${
          mark === TMP_MARK
            ? "temporary file or folder of a save that was interrupted or is still running (possibly half-written)"
            : "previous save, set aside while a new one moved in"
        }; load ${split(dir).parent}/${
          base.slice(0, i)
        } instead (the next save or load there cleans this up).`,
      );
    }
  }
}

/**
 * Finishes the cleanup of interrupted saves into `dir`: when `dir` is missing but a save
 * set aside as `<dir>.old-*` exists (killed between the two renames), that previous
 * complete save is renamed back; then every `<dir>.tmp-*` and remaining `<dir>.old-*` is
 * removed. Returns the paths removed or restored.
 *
 * @example
 * ```ts
 * import { recoverInterruptedSave } from "./atomic_dir.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/save.old-1`);
 * await Deno.writeTextFile(`${root}/save.old-1/a.txt`, "previous");
 * await Deno.mkdir(`${root}/save.tmp-2`); // half-written new save
 * await recoverInterruptedSave(`${root}/save`);
 * if (await Deno.readTextFile(`${root}/save/a.txt`) !== "previous") throw new Error("not restored");
 * for await (const e of Deno.readDir(root)) if (e.name !== "save") throw new Error(`left ${e.name}`);
 * ```
 */
export async function recoverInterruptedSave(dir: string): Promise<string[]> {
  const { parent } = split(dir);
  const { tmp, old } = await interruptedSaves(dir);
  const touched: string[] = [];
  if (old.length > 0 && !(await pathExists(dir))) {
    const restore = old.pop()!;
    await Deno.rename(restore, dir);
    await fsyncPath(parent);
    touched.push(restore);
  }
  for (const p of [...tmp, ...old]) {
    await Deno.remove(p, { recursive: true }).catch((e) => {
      // NotFound: removed meanwhile; no permission: a load from a read-only place still works
      if (!(e instanceof Deno.errors.NotFound) && !isPermissionError(e)) throw e;
    });
    touched.push(p);
  }
  return touched;
}

/** Options for {@linkcode writeDirAtomic}. */
export interface WriteDirAtomicOptions {
  /**
   * Entries of the previous save at `dir` (files or folders, by name) to carry into the
   * new one when `write` did not create them, e.g. a tokenizer or `history.json` next to
   * an adapter. They are hard-linked (copied where links fail), so the previous save
   * stays intact until the rename. @default {() => false: the folder is replaced whole}
   */
  carry?: (name: string) => boolean;
}

/** Hard-links (or copies) `from` into `to`, folders recursively. */
async function linkTree(from: string, to: string): Promise<void> {
  const st = await Deno.lstat(from);
  if (st.isDirectory) {
    await Deno.mkdir(to);
    for await (const e of Deno.readDir(from)) await linkTree(`${from}/${e.name}`, `${to}/${e.name}`);
  } else if (st.isFile) {
    await Deno.link(from, to).catch(() => Deno.copyFile(from, to));
  } else if (st.isSymlink) {
    await Deno.symlink(await Deno.readLink(from), to);
  }
}

/**
 * Writes a folder atomically: `write(tmp)` fills a fresh temporary folder next to `dir`;
 * then everything is fsynced and renamed into place, replacing any previous save at
 * `dir` (see the module docs). Leftovers of earlier interrupted saves are removed first.
 * When `write` throws, the temporary folder is removed and `dir` is untouched.
 *
 * @param dir destination folder (its parent is created when missing).
 * @param write fills the temporary folder it receives (which already exists).
 * @param options which entries of the previous save to keep.
 * @example
 * ```ts
 * import { writeDirAtomic } from "./atomic_dir.ts";
 * const root = await Deno.makeTempDir();
 * await writeDirAtomic(`${root}/save`, (tmp) => Deno.writeTextFile(`${tmp}/a.txt`, "one"));
 * await writeDirAtomic(`${root}/save`, (tmp) => Deno.writeTextFile(`${tmp}/b.txt`, "two"));
 * const names = [];
 * for await (const e of Deno.readDir(`${root}/save`)) names.push(e.name);
 * if (names.join() !== "b.txt") throw new Error(`the old save's files must be gone: ${names}`);
 * ```
 */
export async function writeDirAtomic(
  dir: string,
  write: (tmp: string) => Promise<void>,
  options: WriteDirAtomicOptions = {},
): Promise<void> {
  const clean = dir.replace(/\/+$/, "") || "/";
  refuseInterruptedSave(clean, "save");
  const { parent } = split(clean);
  await Deno.mkdir(parent, { recursive: true });
  await recoverInterruptedSave(clean);
  if (await pathExists(clean) && !(await Deno.lstat(clean)).isDirectory) {
    throw new TypeError(`save: ${clean} exists and is not a folder; choose another destination.`);
  }
  const id = crypto.randomUUID().slice(0, 8);
  const tmp = `${clean}${TMP_MARK}${id}`;
  await Deno.mkdir(tmp);
  try {
    await write(tmp);
    if (options.carry && await pathExists(clean)) {
      for await (const e of Deno.readDir(clean)) {
        const leftover = e.name.includes(TMP_MARK) || e.name.includes(OLD_MARK);
        if (!leftover && options.carry(e.name) && !(await pathExists(`${tmp}/${e.name}`))) {
          await linkTree(`${clean}/${e.name}`, `${tmp}/${e.name}`);
        }
      }
    }
    await fsyncTree(tmp);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  if (await pathExists(clean)) {
    const old = `${clean}${OLD_MARK}${id}`;
    await Deno.rename(clean, old);
    await fsyncPath(parent);
    await Deno.rename(tmp, clean);
    await fsyncPath(parent);
    await Deno.remove(old, { recursive: true });
  } else {
    await Deno.rename(tmp, clean);
    await fsyncPath(parent);
  }
}
