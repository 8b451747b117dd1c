/**
 * Training examples pulled lazily from an async iterable of records: what `train` uses when
 * `data` is an `AsyncIterable` and `steps` is given. Each step takes the examples it needs
 * (`take(n)`), so at most one step's records are held; records are tokenized and checked as
 * they arrive (a record without target tokens is skipped, as with arrays). The stream is read
 * once, in its own order: there is no shuffling and no epochs. For a resumed run, `skip`
 * re-reads the records the interrupted run consumed and compares their hash.
 * @module
 */
import { countTargets, type Example } from "./data.ts";
import { DataHasher, type StreamPosition } from "./training_state.ts";

/**
 * Examples from an async iterable of records, pulled on demand.
 *
 * @example
 * ```ts
 * import { ExampleStream } from "./example_stream.ts";
 * let pulled = 0;
 * async function* records() {
 *   for (let i = 0; i < 100; i++) {
 *     pulled++;
 *     yield { ids: [1, 2, 3 + i] };
 *   }
 * }
 * const s = new ExampleStream(records(), (r) => ({ ids: r.ids, labels: r.ids }));
 * const first = await s.take(4, "step 1");
 * if (first.length !== 4 || pulled !== 4) throw new Error(`pulled ${pulled}`);
 * if (s.position().consumed !== 4) throw new Error("consumed");
 * await s.close();
 * ```
 */
export class ExampleStream<R> {
  readonly #iterator: AsyncIterator<R>;
  readonly #prepare: (record: R, index: number) => Example;
  readonly #hasher = new DataHasher();
  #consumed = 0;
  #usable = 0;
  #done = false;

  /**
   * @param source the records; its iterator is left (`return()`) by {@linkcode close}.
   * @param prepare tokenizes and checks record number `index` (throwing with its name when bad).
   */
  constructor(source: AsyncIterable<R>, prepare: (record: R, index: number) => Example) {
    this.#iterator = source[Symbol.asyncIterator]();
    this.#prepare = prepare;
  }

  /** The next record's example (hashed), or undefined at the end of the stream. */
  async #next(): Promise<Example | undefined> {
    if (this.#done) return undefined;
    const r = await this.#iterator.next();
    if (r.done) {
      this.#done = true;
      return undefined;
    }
    const ex = this.#prepare(r.value, this.#consumed++);
    this.#hasher.add(ex);
    return ex;
  }

  /**
   * The next `n` examples with target tokens. Throws a RangeError naming `where` (e.g. the step)
   * and the counts when the stream ends first.
   */
  async take(n: number, where: string): Promise<Example[]> {
    const out: Example[] = [];
    while (out.length < n) {
      const ex = await this.#next();
      if (ex === undefined) {
        throw new RangeError(
          `train: the data stream ended at ${where} after ${this.#consumed} records ` +
            `(${this.#usable + out.length} with target tokens), but each step needs ${n} examples; ` +
            "give at least steps × batchSize × gradAccumSteps examples (for several passes, pass an async " +
            "generator that yields the data again, e.g. `for (let e = 0; e < 3; e++) yield* streamJsonl(path)`) " +
            "or lower steps",
        );
      }
      if (countTargets(ex) > 0) out.push(ex);
    }
    this.#usable += out.length;
    return out;
  }

  /**
   * Skips the records a saved run consumed and checks they are the same (their hash), so that a
   * resumed run continues on the next record. Throws when the stream is shorter or differs.
   */
  async skip(saved: StreamPosition): Promise<void> {
    while (this.#consumed < saved.consumed) {
      if ((await this.#next()) === undefined) {
        throw new RangeError(
          `the data stream ended after ${this.#consumed} records, but the saved run had consumed ` +
            `${saved.consumed}; resume with a stream that replays the same records in the same order ` +
            "(e.g. streamJsonl of the same file)",
        );
      }
    }
    const got = this.#hasher.digest();
    if (got !== saved.hash) {
      throw new RangeError(
        `the first ${saved.consumed} records of the data stream differ from the ones the saved run consumed ` +
          `(hash ${got}, saved ${saved.hash}); resume with a stream that replays the same records in the ` +
          "same order (e.g. streamJsonl of the same file) and the same tokenizer",
      );
    }
  }

  /** Records pulled so far and their hash (saved in the training state). */
  position(): StreamPosition {
    return { consumed: this.#consumed, hash: this.#hasher.digest() };
  }

  /** Leaves the iterator (`return()`): a `streamJsonl` file is closed. */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#iterator.return?.();
  }
}
