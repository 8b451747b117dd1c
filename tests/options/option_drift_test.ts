/**
 * The option-drift test: for every public function's options and every recipe field,
 * the documented options (the TS interface and its JSDoc, read with `deno doc --json`)
 * and the accepted ones (the schema) must be the same set; every documented option must
 * be accepted with a valid value; every `@default` written as a literal must equal the
 * schema's default; old names must be rejected with the new one; numbers given as
 * strings and values out of range must be refused naming the function and the path.
 */
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import type { AnyField } from "../../lib/options/schema.ts";
import { galoreFields, tokenizeFields, trainOptionsSchema } from "../../lib/train/train_options.ts";
import { loadModelSchema } from "../../lib/models/load_model.ts";
import { quantizeCheckpointSchema } from "../../lib/quant/quantize_checkpoint.ts";
import { quantize4bitSchema } from "../../lib/quant/blockwise_4bit.ts";
import { quantizeSpecFields } from "../../lib/quant/quantize_option.ts";
import { bnbQuantizationConfigSchema } from "../../lib/quant/bnb_format.ts";
import { estimateBitsSchema } from "../../lib/quant/storage.ts";
import { dyloraSchema, loraSchema } from "../../lib/adapters/attach.ts";
import { planSpecSchema } from "../../lib/plan/plan_spec.ts";
import { trainerPlanSchema } from "../../lib/plan/plan_for_model.ts";
import { parseRecipe, recipeFields } from "../../lib/train/recipe.ts";
import { planForModel } from "../../lib/plan/plan_for_model.ts";
import { EXTRA_SCHEMAS } from "./_schemas.ts";

/** One options object: its schema fields and where its interface is documented. */
interface Case {
  fn: string;
  fields: Readonly<Record<string, AnyField>>;
  renamed?: Readonly<Record<string, string>>;
  parse?: (options: unknown) => unknown;
  file: string;
  iface: string;
  /** Interfaces whose members this one inherits (`extends`), with their files. */
  inherits?: { file: string; iface: string }[];
  /** Documented members deliberately absent from the schema (none today). */
  omit?: string[];
}

const CASES: Case[] = [
  { ...fromSchema(trainOptionsSchema), file: "lib/train/trainer.ts", iface: "TrainOptions" },
  { fn: "train (tokenize)", fields: tokenizeFields, file: "lib/train/data.ts", iface: "TokenizeOptions" },
  {
    fn: "train (galore)",
    fields: galoreFields,
    file: "lib/train/optimizers.ts",
    iface: "GaLoreTrainOptions",
  },
  { ...fromSchema(loadModelSchema), file: "lib/models/load_model.ts", iface: "LoadModelOptions" },
  {
    ...fromSchema(quantizeCheckpointSchema),
    file: "lib/quant/quantize_checkpoint.ts",
    iface: "QuantizeCheckpointOptions",
  },
  { ...fromSchema(quantize4bitSchema), file: "lib/quant/blockwise_4bit.ts", iface: "Quantize4bitOptions" },
  { fn: "quantize", fields: quantizeSpecFields, file: "lib/quant/quantize_option.ts", iface: "QuantizeSpec" },
  {
    ...fromSchema(bnbQuantizationConfigSchema),
    file: "lib/quant/bnb_format.ts",
    iface: "BnbQuantizationConfigOptions",
  },
  { ...fromSchema(estimateBitsSchema), file: "lib/quant/storage.ts", iface: "EstimateBitsOptions" },
  { ...fromSchema(loraSchema), file: "lib/adapters/attach.ts", iface: "LoRAConfig" },
  { ...fromSchema(dyloraSchema), file: "lib/adapters/attach.ts", iface: "DyLoRAConfig" },
  { ...fromSchema(planSpecSchema), file: "lib/plan/plan_spec.ts", iface: "PlanSpec" },
  {
    ...fromSchema(trainerPlanSchema),
    file: "lib/plan/plan_for_model.ts",
    iface: "TrainerPlanOptions",
    inherits: [{ file: "lib/train/trainer.ts", iface: "TrainOptions" }],
  },
  {
    fn: "recipe",
    fields: recipeFields,
    parse: (o) => parseRecipe(JSON.stringify({ model: "m", data: "d", ...(o as object) }), "/x", "recipe"),
    file: "lib/train/recipe.ts",
    iface: "RecipeFile",
  },
  ...EXTRA_SCHEMAS.map((e) => ({ ...fromSchema(e.schema), file: e.file, iface: e.iface })),
];

function fromSchema(
  s: { fn: string; fields: Readonly<Record<string, AnyField>>; renamed: Readonly<Record<string, string>> } & {
    parse(o: unknown): unknown;
  },
): Pick<Case, "fn" | "fields" | "renamed" | "parse"> {
  return { fn: s.fn, fields: s.fields, renamed: s.renamed, parse: (o) => s.parse(o) };
}

/** The required options of a case, at their example values (every parse needs them). */
function required(c: Case): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(c.fields).filter(([, f]) => f.required).map(([k, f]) => [k, f.example]),
  );
}

interface DocProperty {
  name: string;
  jsDoc?: { doc?: string; tags?: { kind: string; value?: string }[] };
}

/** Interface members and their JSDoc, from `deno doc --json` (one run for all files). */
async function documentedInterfaces(files: string[]): Promise<Map<string, DocProperty[]>> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["doc", "--json", ...files], stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`deno doc failed: ${new TextDecoder().decode(out.stderr)}`);
  type DocSymbol = { name: string; declarations: { kind: string; def: { properties: DocProperty[] } }[] };
  const json = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    nodes: Record<string, { symbols: DocSymbol[] }>;
  };
  const found = new Map<string, DocProperty[]>();
  for (const [url, { symbols }] of Object.entries(json.nodes)) {
    const file = url.slice(url.search(/\/(lib|scripts|bench)\//) + 1);
    for (const n of symbols) {
      const d = n.declarations.find((d) => d.kind === "interface");
      if (d) found.set(`${file}#${n.name}`, d.def.properties);
    }
  }
  return found;
}

const DOCS = await documentedInterfaces([
  ...new Set(CASES.flatMap((c) => [c.file, ...(c.inherits ?? []).map((i) => i.file)])),
]);

function membersOf(c: Case): DocProperty[] {
  const own = DOCS.get(`${c.file}#${c.iface}`);
  if (!own) throw new Error(`${c.file} documents no exported interface ${c.iface}`);
  return [...own, ...(c.inherits ?? []).flatMap((i) => membersOf({ ...c, ...i, inherits: undefined }))];
}

/** The `@default` of a member, when it is written as a JSON-like literal (else undefined). */
function literalDefault(p: DocProperty): { value: unknown } | undefined {
  const tag = p.jsDoc?.tags?.find((t) => t.kind === "default")?.value;
  const inline = /@default\s+(\{[^}]*\}|\S+)/.exec(p.jsDoc?.doc ?? "")?.[1];
  let text = (tag ?? inline)?.trim();
  if (text === undefined) return undefined;
  if (text.startsWith("{") && text.endsWith("}") && !text.includes(":")) text = text.slice(1, -1).trim();
  try {
    return { value: JSON.parse(text.replaceAll("'", '"')) };
  } catch {
    return undefined; // prose ("hidden / 4", "weightDtype"), not a literal
  }
}

Deno.test("every documented option is accepted and every accepted option is documented", async (t) => {
  for (const c of CASES) {
    await t.step(`${c.fn} (${c.iface})`, () => {
      const members = membersOf(c);
      const documented = members.map((m) => m.name).filter((n) => !(c.omit ?? []).includes(n)).sort();
      assertEquals(Object.keys(c.fields).sort(), documented, `${c.fn}: schema fields vs ${c.iface} members`);
      for (const m of members) {
        const doc = (m.jsDoc?.doc ?? "").replace(/@default.*/s, "").trim();
        assert(doc.length > 0, `${c.iface}.${m.name} has no JSDoc saying what it does`);
      }
      if (c.parse) {
        for (const [name, field] of Object.entries(c.fields)) {
          c.parse({ ...required(c), [name]: field.example }); // throws if a documented option is refused
        }
      }
    });
  }
});

Deno.test("every @default written as a literal equals the schema's default", async (t) => {
  let compared = 0;
  for (const c of CASES) {
    await t.step(c.fn, () => {
      for (const m of membersOf(c)) {
        const field = c.fields[m.name];
        const lit = literalDefault(m);
        if (!field || !lit || field.fields) continue;
        assert(
          field.hasDefault,
          `${c.fn}: ${m.name} documents @default ${JSON.stringify(lit.value)} but has none`,
        );
        assertEquals(field.example, lit.value, `${c.fn}: ${m.name} @default`);
        compared++;
      }
    });
  }
  assert(compared > 40, `only ${compared} defaults compared`);
});

Deno.test("old names are rejected with a message that gives the new one", async (t) => {
  for (const c of CASES.filter((c) => c.renamed && c.parse)) {
    await t.step(c.fn, () => {
      for (const [old, to] of Object.entries(c.renamed!)) {
        const head = to.split(/[ .]/)[0];
        assert(head in c.fields, `${c.fn}: "${old}" is renamed to "${to}", which is no option`);
        assertThrows(
          () => c.parse!({ ...required(c), [old]: 1 }),
          TypeError,
          `option "${old}" was renamed to`,
        );
      }
    });
  }
});

Deno.test("numbers given as strings and values out of range are refused with the function and path", async (t) => {
  for (const c of CASES.filter((c) => c.parse)) {
    await t.step(c.fn, () => {
      for (const [name, field] of Object.entries(c.fields)) {
        if (!/^(a finite number|an integer)/.test(field.type) || field.type.includes("string")) continue;
        const ok = field.example as number;
        const base = required(c);
        assertThrows(() => c.parse!({ ...base, [name]: String(ok) }), TypeError, `option "${name}" must be`);
        assertThrows(
          () => c.parse!({ ...base, [name]: String(ok) }),
          TypeError,
          "a number given as a string",
        );
        const min = /(>=|>) (-?[\d.e-]+)/.exec(field.type);
        if (min) {
          const below = min[1] === ">=" ? Number(min[2]) - 1 : Number(min[2]);
          assertThrows(
            () => c.parse!({ ...base, [name]: below }),
            RangeError,
            `option "${name}" must be ${field.type.split(" or ")[0]}`,
          );
        }
      }
    });
  }
});

Deno.test("the planner takes real train() options, including saveEvery and nested tokenize", () => {
  const model = {
    config: {
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      vocab_size: 100,
    },
  };
  const trainOptions = {
    batchSize: 2,
    gradAccumSteps: 2,
    lr: 1e-3,
    warmupSteps: 2,
    steps: 10,
    schedule: "linear" as const,
    saveEvery: 5,
    outputDir: "out/x",
    evalEvery: 5,
    shuffleSeed: 3,
    measureMemory: false,
    tokenize: { maxLength: 32 },
    onStep: () => {},
  };
  const p = planForModel(model, { ...trainOptions, method: "lora", r: 4 });
  assertEquals(p.spec.seqLen, 32, "seqLen defaults to tokenize.maxLength");
  assertEquals(p.spec.microBatch, 2);
  assertThrows(
    () => planForModel(model, { ...trainOptions, loraRank: 4 } as never),
    TypeError,
    'planForModel: option "loraRank" was renamed to "r"',
  );
  assertThrows(
    () => planForModel(model, { tokenize: { maxLen: 3 } } as never),
    TypeError,
    'planForModel: unknown option "tokenize.maxLen"',
  );
});
