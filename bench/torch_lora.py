"""PyTorch CPU baseline for `deno task bench:scale`: fp32 LoRA on a Llama of a checkpoint's shape.

Usage: /usr/bin/python3 bench/torch_lora.py <model dir> [--seq 256] [--batch 1] [--r 16]
       [--steps 2] [--threads N] [--autocast-bf16]

Builds the architecture from the directory's config.json (random fp32 weights: the same
shapes and FLOPs as the checkpoint; bitsandbytes has no CPU path, so fp32 LoRA is what
PyTorch users run on a CPU), freezes the base, puts LoRA (rank r, alpha 2r) on every linear
layer of every block (q, k, v, o, gate, up, down), and times AdamW training steps of
`batch x seq` random tokens after one warm-up step. Prints one JSON line: tokens/s (best
step), seconds per step, peak RSS (ru_maxrss), threads, torch version. With --autocast-bf16 the
forward and loss run under `torch.autocast("cpu", dtype=torch.bfloat16)` (matmuls in bf16 through
oneDNN, what a PyTorch user with a bf16-capable CPU can turn on), for comparison with nbtune's
`computeDtype: "bfloat16"`.
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Module):
    """Frozen fp32 base `W [O, I]` plus `scaling * B @ A` (A [r, I], B [O, r], B = 0 at start)."""

    def __init__(self, i, o, r):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i) * 0.02, requires_grad=False)
        self.a = nn.Parameter(torch.randn(r, i) / math.sqrt(i))
        self.b = nn.Parameter(torch.zeros(o, r))
        self.scaling = 2.0

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.a), self.b) * self.scaling


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
    return x * cos + rot * sin


class Block(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.h, self.g = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        self.dh = d // self.h
        self.q = LoRALinear(d, self.h * self.dh, r)
        self.k = LoRALinear(d, self.g * self.dh, r)
        self.v = LoRALinear(d, self.g * self.dh, r)
        self.o = LoRALinear(self.h * self.dh, d, r)
        self.gate = LoRALinear(d, f, r)
        self.up = LoRALinear(d, f, r)
        self.down = LoRALinear(f, d, r)
        eps = c.get("rms_norm_eps", 1e-5)
        self.n1, self.n2 = RMSNorm(d, eps), RMSNorm(d, eps)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        y = self.n1(x)
        q = self.q(y).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(y).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v(y).view(b, t, self.g, self.dh).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = self.h // self.g
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh)
        mask = torch.full((t, t), float("-inf")).triu(1)
        a = torch.softmax(s + mask, dim=-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        y = self.n2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Llama(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        d, v = c["hidden_size"], c["vocab_size"]
        self.embed = nn.Parameter(torch.randn(v, d) * 0.02, requires_grad=False)
        self.blocks = nn.ModuleList([Block(c, r) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(d, c.get("rms_norm_eps", 1e-5))
        self.tied = c.get("tie_word_embeddings", False)
        if not self.tied:
            self.head = nn.Parameter(torch.randn(v, d) * 0.02, requires_grad=False)
        dh = d // c["num_attention_heads"]
        self.inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, dh, 2).float() / dh))

    def forward(self, ids):
        t = ids.shape[1]
        f = torch.outer(torch.arange(t).float(), self.inv)
        emb = torch.cat([f, f], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = F.embedding(ids, self.embed)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return F.linear(self.norm(x), self.embed if self.tied else self.head)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--autocast-bf16", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with open(f"{a.dir}/config.json") as fh:
        c = json.load(fh)
    torch.manual_seed(0)
    t0 = time.time()
    model = Llama(c, a.r)
    build_s = time.time() - t0
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, c["vocab_size"], (a.batch, a.seq))
    targets = torch.roll(ids, -1, dims=1)
    times = []
    for step in range(a.steps + 1):
        t = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast_bf16):
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step > 0:
            times.append(time.time() - t)
    tokens = a.batch * a.seq
    print(json.dumps({
        "tokensPerSecond": tokens / min(times),
        "secondsPerStep": times,
        "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": torch.get_num_threads(),
        "autocast": "bf16" if a.autocast_bf16 else None,
        "buildSeconds": build_s,
        "loss": float(loss),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
