/**
 * Model families by `config.json`'s `model_type`, one row each: the architecture facts
 * the loader, the planner (`lib/plan/model_shape.ts`) and the engine estimate read, and
 * whether our engine (`LlamaForCausalLM`) runs the family. Adding a family is one row
 * here (plus, for the engine, whatever new layer it needs: Qwen2's q/k/v biases, Gemma's
 * GeGLU and scaled embeddings, Phi-3's fused qkv/gate-up are fields this table already
 * names, so each is a row plus the layer code that reads the field).
 * @module
 */
import { LLAMA_LIKE } from "./families/llama_like.ts";
import { checkLlamaConfig } from "./families/llama.ts";
import { QWEN2_FAMILY } from "./families/qwen2.ts";
import { GEMMA_FAMILY } from "./families/gemma.ts";
import { PHI3_FAMILY } from "./families/phi3.ts";

/** MLP flavour: SwiGLU has three matrices (gate, up, down), GELU two (up, down). */
export type MlpKind = "swiglu" | "gelu";
/** Norm flavour: RMSNorm has a weight `[D]`, LayerNorm a weight and a bias. */
export type NormKind = "rmsnorm" | "layernorm";

/** One model family. */
export interface ModelFamily {
  /** `model_type` in `config.json`. */
  readonly modelType: string;
  /** Other `model_type` spellings of the same family. */
  readonly aliases: readonly string[];
  /** One line for docs and errors. */
  readonly doc: string;
  /** Our engine loads and trains it (`loadModel`, `initModel`, `estimateTrainingMemory`). */
  readonly engine: boolean;
  /** Why the engine does not run it (when `engine` is false). */
  readonly engineGap?: string;
  /** MLP when `hidden_act` does not say (`gelu*` means GELU). */
  readonly mlp: MlpKind;
  readonly norm: NormKind;
  /** Norms per decoder layer (2: before attention and before the MLP). */
  readonly normsPerLayer: number;
  /** q/k/v projections carry biases regardless of `attention_bias` (Qwen2). */
  readonly qkvBias: boolean;
  /** q, k and v are one fused matrix (Falcon `query_key_value`, Phi-3 `qkv_proj`). */
  readonly fusedQkv: boolean;
  /** `tie_word_embeddings` when `config.json` omits it. */
  readonly tieWordEmbeddings: boolean;
  /** PEFT module names of one decoder layer's linears: attention, then MLP. */
  readonly linearNames: { readonly attention: readonly string[]; readonly mlp: readonly string[] };
  /**
   * Refuses (throws, naming them) the family's `config.json` keys that change the math and that
   * the engine does not implement; `source` names the file in the message.
   */
  readonly checkConfig?: (raw: Record<string, unknown>, source: string) => void;
  /** RMSNorm scales by `1 + weight` (Gemma). */
  readonly normUnitOffset?: boolean;
  /** Embeddings are multiplied by `sqrt(hidden_size)` (Gemma). */
  readonly scaleEmbeddings?: boolean;
  /** The MLP activation from the config when the family reads it its own way (Gemma); else `hidden_act`. */
  readonly activation?: (raw: Record<string, unknown>, source: string) => "silu" | "gelu_tanh";
  /**
   * Checkpoints store q/k/v as one `self_attn.qkv_proj` and gate/up as one `mlp.gate_up_proj`
   * (Phi-3): split on load, fused on save and in PEFT adapters (`lib/models/fused_linears.ts`).
   */
  readonly fusedLinears?: boolean;
}

/** Every model family by `model_type`. */
export const MODEL_FAMILIES: Readonly<
  Record<"llama" | "mistral" | "qwen2" | "gemma" | "phi3" | "falcon", ModelFamily>
> = {
  llama: {
    ...LLAMA_LIKE,
    modelType: "llama",
    aliases: ["tinyllama"],
    doc: "Llama 1/2/3 (RoPE, grouped-query attention, SwiGLU, RMSNorm)",
    checkConfig: checkLlamaConfig,
  },
  mistral: {
    ...LLAMA_LIKE,
    modelType: "mistral",
    aliases: [],
    doc: "Mistral (Llama layout; sliding-window attention is not needed below its window)",
    checkConfig: checkLlamaConfig,
  },
  qwen2: QWEN2_FAMILY,
  gemma: GEMMA_FAMILY,
  phi3: PHI3_FAMILY,
  falcon: {
    modelType: "falcon",
    aliases: ["RefinedWeb", "RefinedWebModel"],
    doc: "Falcon (fused query_key_value, GELU MLP, LayerNorm); planner only",
    engine: false,
    engineGap: "it uses LayerNorm, a GELU MLP and a fused query_key_value",
    mlp: "gelu",
    norm: "layernorm",
    normsPerLayer: 2,
    qkvBias: false,
    fusedQkv: true,
    tieWordEmbeddings: true,
    linearNames: { attention: ["query_key_value", "dense"], mlp: ["dense_h_to_4h", "dense_4h_to_h"] },
  },
};

/**
 * The family of `modelType` (a key of {@linkcode MODEL_FAMILIES} or one of its aliases),
 * or undefined.
 *
 * @example
 * ```ts
 * import { findModelFamily } from "./families.ts";
 * if (findModelFamily("RefinedWeb")?.modelType !== "falcon") throw new Error("alias");
 * if (findModelFamily("phi") !== undefined) throw new Error("phi (1/2) is not a row");
 * ```
 */
export function findModelFamily(modelType: string): ModelFamily | undefined {
  const rows = Object.values(MODEL_FAMILIES) as ModelFamily[];
  return rows.find((f) => f.modelType === modelType || f.aliases.includes(modelType));
}

/** The `model_type`s our engine runs (aliases included). */
export function engineModelTypes(): string[] {
  return (Object.values(MODEL_FAMILIES) as ModelFamily[]).filter((f) => f.engine)
    .flatMap((f) => [f.modelType, ...f.aliases]);
}

/**
 * The family our engine runs for `modelType`, or a RangeError that names `source`, the
 * supported types and, for a known family, what the engine lacks.
 *
 * @example
 * ```ts
 * import { engineFamily } from "./families.ts";
 * if (engineFamily("mistral").modelType !== "mistral") throw new Error("mistral runs");
 * let msg = "";
 * try { engineFamily("falcon", "config.json"); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("LayerNorm")) throw new Error(msg);
 * ```
 */
export function engineFamily(modelType: string, source = "model config"): ModelFamily {
  const f = findModelFamily(modelType);
  if (f?.engine) return f;
  const supported = engineModelTypes().join(", ");
  throw new RangeError(
    f
      ? `${source}: model_type "${modelType}" (${f.doc}) does not run on our engine yet: ${f.engineGap} (supported: ${supported})`
      : `${source}: model_type "${modelType}" is not a Llama-family model (supported: ${supported})`,
  );
}
