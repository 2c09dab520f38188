"""The demo CLIP-style dual encoder (small CNN image tower + small causal transformer text tower)
and the ONNX export wrappers that implement the serving tensor contracts.

Contracts (kept identical for the demo model and for real CLIP exports, see export_openclip.py):
  image: pixels UINT8 [B,224,224,3] (RGB, NHWC, CLIP-preprocessed: shortest side resized to 224
         bicubic + 224 center crop) -> embedding FLOAT32 [B,D], L2-normalised.
  text:  input_ids INT64 [B,77] (CLIP BPE ids, 49406 = start, 49407 = end, zero padded)
         -> embedding FLOAT32 [B,D], L2-normalised; pooled at argmax(input_ids) like CLIP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
SOT, EOT = 49406, 49407


# ------------------------------------------------------------------------------------------------
# image tower
# ------------------------------------------------------------------------------------------------
class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2 if k > s else 0, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1 = ConvBNAct(c, c)
        self.c2 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        nn.init.zeros_(self.c2[1].weight)  # start as identity

    def forward(self, x):
        return F.relu(x + self.c2(self.c1(x)))


class ImageTower(nn.Module):
    """Input: normalised float [B,3,112,112] (the export wrapper average-pools 224 -> 112)."""

    def __init__(
        self, dim: int = 256, widths=(48, 96, 192), head: int = 384, blocks=(1, 1, 1), stem: int = 8
    ):
        super().__init__()
        w0, w1, w2 = widths
        # patchify stem: stem x stem patches of the 112 px input (= 2*stem px of the 224 px image)
        layers: list[nn.Module] = [ConvBNAct(3, w0, k=stem, s=stem)]  # 112 -> 14 (stem 8)
        layers += [ResBlock(w0) for _ in range(blocks[0])]
        layers += [ConvBNAct(w0, w1, 3, 2)]  # 14 -> 7
        layers += [ResBlock(w1) for _ in range(blocks[1])]
        layers += [ConvBNAct(w1, w2, 3, 2)]  # 7 -> 4
        layers += [ResBlock(w2) for _ in range(blocks[2])]
        layers += [ConvBNAct(w2, head, 1, 1)]
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(head, dim)

    def forward(self, x):
        x = self.features(x)
        x = x.mean(dim=(2, 3))
        return self.proj(x)


# ------------------------------------------------------------------------------------------------
# text tower (pre-LN causal transformer, CLIP-style EOT pooling)
# ------------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, mask):
        b, t, w = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, h, w // h).permute(2, 0, 3, 1, 4).unbind(0)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(w // h)) + mask
        y = att.softmax(-1) @ v
        x = x + self.out(y.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.ln2(x))


class TextTower(nn.Module):
    """Input: CLIP BPE ids [B,T] (T <= 77). Causal attention, so the output at the end token does not
    depend on what follows it: training may use a shorter T and the export may cut the padding."""

    def __init__(
        self,
        dim: int = 256,
        width: int = 192,
        layers: int = 4,
        heads: int = 3,
        emb: int = 64,
        vocab: int = VOCAB_SIZE,
        context: int = CONTEXT_LENGTH,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, emb)
        self.emb_proj = nn.Linear(emb, width, bias=False)
        self.positional_embedding = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    @staticmethod
    def causal_mask(pos: torch.Tensor) -> torch.Tensor:
        # pos: [T] int64 positions -> [T,T] additive mask (0 where key <= query, -inf above the diagonal)
        return torch.where(
            pos.unsqueeze(0) > pos.unsqueeze(1), torch.full((), float("-inf")), torch.zeros(())
        )

    def encode(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.emb_proj(self.token_embedding(ids)) + self.positional_embedding.index_select(0, pos)
        mask = self.causal_mask(pos)
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.ln_final(x)
        eot = ids.argmax(dim=-1)
        x = x[torch.arange(x.shape[0]), eot]
        return self.proj(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.encode(ids, pos)


class DemoCLIP(nn.Module):
    def __init__(self, dim: int = 256, image_kw: dict | None = None, text_kw: dict | None = None):
        super().__init__()
        self.visual = ImageTower(dim=dim, **(image_kw or {}))
        self.text = TextTower(dim=dim, **(text_kw or {}))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x):
        return F.normalize(self.visual(x), dim=-1)

    def encode_text(self, ids):
        return F.normalize(self.text(ids), dim=-1)


# ------------------------------------------------------------------------------------------------
# export wrappers (the serving contracts)
# ------------------------------------------------------------------------------------------------
class PixelsToCLIPInput(nn.Module):
    """uint8 NHWC [B,H,W,3] -> float NCHW, /255, CLIP mean/std; optional k x k average pooling."""

    def __init__(self, pool: int = 1):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 1, 1, 3), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(CLIP_STD).view(1, 1, 1, 3), persistent=False)
        self.pool = pool

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(torch.float32) * (1.0 / 255.0) - self.mean) * self.inv_std
        x = x.permute(0, 3, 1, 2)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return x


class ImageExport(nn.Module):
    def __init__(self, tower: nn.Module, pool: int = 2):
        super().__init__()
        self.pre = PixelsToCLIPInput(pool)
        self.tower = tower

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(self.pre(pixels)), dim=-1)


class TextExport(nn.Module):
    """input_ids [B,77] -> embedding. Only the first max(argmax(ids))+1 positions are computed: with
    causal attention this is exactly the full-length result, and a 5-token query costs ~1/15."""

    def __init__(self, tower: TextTower, trim: bool = True):
        super().__init__()
        self.tower = tower
        self.trim = trim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.trim:
            length = input_ids.argmax(dim=-1).max() + 1
            pos = torch.arange(length, device=input_ids.device)
            ids = input_ids.index_select(1, pos)
        else:
            ids = input_ids
            pos = torch.arange(ids.shape[1], device=ids.device)
        return F.normalize(self.tower.encode(ids, pos), dim=-1)
