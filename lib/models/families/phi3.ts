/**
 * Phi-3 (`model_type: "phi3"`, Transformers' `modeling_phi3.py`): the Llama decoder with fused
 * projections: `self_attn.qkv_proj` `[(H + 2G)·Dh, D]` (q rows, then k, then v) and
 * `mlp.gate_up_proj` `[2F, D]` (gate rows, then up: `gate, up = gate_up.chunk(2, -1)`). The loader
 * splits them into our q/k/v and gate/up layers (`lib/models/fused_linears.ts`), saving and export
 * fuse them back, and PEFT adapters use the fused module names (`qkv_proj`, `gate_up_proj`).
 * Refused (they change the math and are not implemented): `partial_rotary_factor` ≠ 1,
 * `longrope`/`su` rope scaling (Phi-3-128k), non-zero dropouts. A `sliding_window` is honoured by
 * refusing longer sequences (the model's `maxPositionEmbeddings` is capped at the window).
 * @module
 */
import type { ModelFamily } from "../families.ts";

/**
 * Refuses Phi-3 config keys that change the math and are not implemented, naming them.
 *
 * @example
 * ```ts
 * import { checkPhi3Config } from "./phi3.ts";
 * checkPhi3Config({ partial_rotary_factor: 1.0, resid_pdrop: 0 }, "config.json");
 * let msg = "";
 * try { checkPhi3Config({ partial_rotary_factor: 0.75 }, "config.json"); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("partial_rotary_factor: 0.75")) throw new Error(msg);
 * ```
 */
export function checkPhi3Config(raw: Record<string, unknown>, source: string): void {
  const bad: string[] = [];
  if (raw.partial_rotary_factor != null && raw.partial_rotary_factor !== 1) {
    bad.push(`partial_rotary_factor: ${raw.partial_rotary_factor}`);
  }
  for (const k of ["resid_pdrop", "embd_pdrop", "attention_dropout"]) {
    if (typeof raw[k] === "number" && raw[k] !== 0) bad.push(`${k}: ${raw[k]}`);
  }
  if (bad.length) {
    throw new RangeError(
      `${source}: Phi-3 config key(s) ${bad.join(", ")} change the model's math and are not implemented`,
    );
  }
}

/** The Phi-3 row of `MODEL_FAMILIES`. */
export const PHI3_FAMILY: ModelFamily = {
  modelType: "phi3",
  aliases: [],
  doc: "Phi-3 (Llama decoder with fused qkv_proj and gate_up_proj)",
  engine: true,
  mlp: "swiglu",
  norm: "rmsnorm",
  normsPerLayer: 2,
  qkvBias: false,
  fusedQkv: true,
  tieWordEmbeddings: false,
  linearNames: { attention: ["qkv_proj", "o_proj"], mlp: ["gate_up_proj", "down_proj"] },
  checkConfig: checkPhi3Config,
  fusedLinears: true,
};
