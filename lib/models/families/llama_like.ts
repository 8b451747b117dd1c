/**
 * The Llama layout that most family rows start from: SwiGLU MLP, two RMSNorms per layer, separate
 * q/k/v projections without biases, untied embeddings and Llama's module names. A family file
 * spreads it and overrides what differs (`{ ...LLAMA_LIKE, qkvBias: true }`).
 * @module
 */

/** Llama's linear module names (PEFT target names). */
export const LLAMA_LINEAR_NAMES = {
  attention: ["q_proj", "k_proj", "v_proj", "o_proj"],
  mlp: ["gate_proj", "up_proj", "down_proj"],
} as const;

/** The fields a Llama-layout family row shares. */
export const LLAMA_LIKE = {
  engine: true,
  mlp: "swiglu",
  norm: "rmsnorm",
  normsPerLayer: 2,
  qkvBias: false,
  fusedQkv: false,
  tieWordEmbeddings: false,
  linearNames: LLAMA_LINEAR_NAMES,
} as const;
