"""XMem memory: working memory, long-term prototypes, affinity and readout.

Follows upstream's `MemoryManager` / `KeyValueMemoryStore` (single object group: all
objects are given on the first frame) with fixes that leave normal outputs alone:
top-k is capped at the memory size and the prototype count at the candidate count (tiny
frames crash upstream), the top-k softmax subtracts the max (no 0/0 NaN when every key
is far away), and obsolete long-term removal drops exactly the requested number on
usage ties (upstream can drop more).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch


# ----------------------------------------------------------------------- affinity math
def get_similarity(
    mem_key: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
) -> torch.Tensor:
    """Anisotropic negative squared L2, [B, N, HW]:
    S = -(s_n / sqrt(CK)) * sum_c e_cm (mk_cn - qk_cm)^2, computed as the three-term
    expansion in upstream's order (the last term cancels in the softmax but is kept for
    bit-level parity of the values that go into top-k)."""
    ck = mem_key.shape[1]
    mk = mem_key.flatten(start_dim=2)
    qk = query_key.flatten(start_dim=2)
    if query_selection is not None:
        qe = query_selection.flatten(start_dim=2)
        mk_t = mk.transpose(1, 2)
        a_sq = mk_t.pow(2) @ qe
        two_ab = 2 * (mk_t @ (qk * qe))
        b_sq = (qe * qk.pow(2)).sum(1, keepdim=True)
        similarity = -a_sq + two_ab - b_sq
    else:
        a_sq = mk.pow(2).sum(1).unsqueeze(2)
        two_ab = 2 * (mk.transpose(1, 2) @ qk)
        similarity = -a_sq + two_ab
    if mem_shrinkage is not None:
        ms = mem_shrinkage.flatten(start_dim=1).unsqueeze(2)
        return similarity * ms / math.sqrt(ck)
    return similarity / math.sqrt(ck)


def topk_softmax(similarity: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Softmax over the memory axis (dim 1) keeping only the top-k per query, dense result.

    k is capped at the memory size (upstream crashes on tiny frames). The max is subtracted
    before exp: identical in exact arithmetic, and no NaN when all similarities are very
    negative (upstream exponentiates raw values and divides 0 by 0).
    """
    similarity = similarity.float()  # sums of exponentials in fp32 under any autocast
    if top_k is None or top_k >= similarity.shape[1]:
        maxes = similarity.max(dim=1, keepdim=True)[0]
        x_exp = torch.exp(similarity - maxes)
        return x_exp / x_exp.sum(dim=1, keepdim=True)
    values, indices = torch.topk(similarity, k=top_k, dim=1)
    x_exp = torch.exp(values - values[:, :1])  # topk is sorted: index 0 is the max
    x_exp = x_exp / x_exp.sum(dim=1, keepdim=True)
    return torch.zeros_like(similarity).scatter_(1, indices, x_exp)


def full_softmax(similarity: torch.Tensor) -> torch.Tensor:
    """Max-subtracted softmax over dim 1 (upstream's consolidation branch), in fp32."""
    similarity = similarity.float()
    maxes = similarity.max(dim=1, keepdim=True)[0]
    x_exp = torch.exp(similarity - maxes)
    return x_exp / x_exp.sum(dim=1, keepdim=True)


# ------------------------------------------------------------------------------ store
class KeyValueStore:
    """Key [1, CK, N], shrinkage [1, 1, N], selection [1, CK, N] | None, value [K, CV, N],
    plus usage counters [1, 1, N] when `count_usage`."""

    def __init__(self, count_usage: bool) -> None:
        self.count_usage = count_usage
        self.key: torch.Tensor | None = None
        self.shrinkage: torch.Tensor | None = None
        self.selection: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self.use_count: torch.Tensor | None = None
        self.life_count: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return 0 if self.key is None else int(self.key.shape[-1])

    def engaged(self) -> bool:
        return self.size > 0

    def add(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        shrinkage: torch.Tensor | None,
        selection: torch.Tensor | None,
    ) -> None:
        n = key.shape[-1]
        new_use = torch.zeros((key.shape[0], 1, n), device=key.device, dtype=torch.float32)
        new_life = torch.zeros((key.shape[0], 1, n), device=key.device, dtype=torch.float32) + 1e-7
        if self.key is None:
            self.key, self.shrinkage, self.selection, self.value = key, shrinkage, selection, value
            if self.count_usage:
                self.use_count, self.life_count = new_use, new_life
            return
        self.key = torch.cat([self.key, key], -1)
        if shrinkage is not None:
            self.shrinkage = torch.cat([self.shrinkage, shrinkage], -1)
        if selection is not None:
            self.selection = torch.cat([self.selection, selection], -1)
        self.value = torch.cat([self.value, value], -1)
        if self.count_usage:
            self.use_count = torch.cat([self.use_count, new_use], -1)
            self.life_count = torch.cat([self.life_count, new_life], -1)

    def update_usage(self, usage: torch.Tensor) -> None:
        """Add this read's affinity mass; every element ages by one read."""
        if not self.count_usage:
            return
        self.use_count += usage.view_as(self.use_count)
        self.life_count += 1

    def get_usage(self) -> torch.Tensor:
        if not self.count_usage:
            raise RuntimeError("usage is not counted for this store")
        return self.use_count / self.life_count

    def _keep(self, keep: torch.Tensor | slice) -> None:
        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, :, keep]

        self.key, self.shrinkage, self.selection, self.value = (
            cut(self.key),
            cut(self.shrinkage),
            cut(self.selection),
            cut(self.value),
        )
        if self.count_usage:
            self.use_count, self.life_count = cut(self.use_count), cut(self.life_count)

    def remove_range(self, start: int, end: int) -> None:
        """Drop elements [start, end)."""
        keep = torch.ones(self.size, dtype=torch.bool, device=self.key.device)
        keep[start:end] = False
        self._keep(keep)

    def remove_obsolete(self, max_size: int) -> int:
        """Drop exactly size - max_size least-used elements (upstream can drop more on ties)."""
        excess = self.size - max_size
        if excess <= 0:
            return 0
        usage = self.get_usage().flatten()
        drop = torch.topk(usage, k=excess, largest=False, sorted=True).indices
        keep = torch.ones_like(usage, dtype=torch.bool)
        keep[drop] = False
        self._keep(keep)
        return excess


# --------------------------------------------------------------------------- manager
@dataclass
class MemoryStats:
    """Counters the tests and callers can inspect."""

    consolidations: int = 0
    removed_long_term: int = 0
    trace: list[tuple[int, int, int]] = field(default_factory=list)  # (t, work, long)


class MemoryManager:
    """Working + long-term memory and the hidden state for one video.

    fast=True (CPU only) reads memory with one GEMM for the three-term similarity, top-k on
    the contiguous axis, and a sparse (top-k only) readout and usage update instead of the
    dense [N, HW] affinity: same maths, several times less time and memory on large frames
    and long videos; results differ from the dense form only by float rounding.
    """

    def __init__(
        self, config: dict, hidden_dim: int, fast: bool = False, sparse: bool | None = None
    ) -> None:
        self.top_k: int = int(config["top_k"])
        self.enable_long_term: bool = bool(config["enable_long_term"])
        self.count_long_usage: bool = bool(config["enable_long_term_count_usage"])
        self.num_prototypes: int = int(config["num_prototypes"])
        self.min_mt_frames: int = int(config["min_mid_term_frames"])
        self.max_mt_frames: int = int(config["max_mid_term_frames"])
        self.max_long_elements: int = int(config["max_long_term_elements"])
        self.hidden_dim = hidden_dim
        self.work = KeyValueStore(count_usage=self.enable_long_term)
        self.long = (
            KeyValueStore(count_usage=self.count_long_usage) if self.enable_long_term else None
        )
        self.hidden: torch.Tensor | None = None
        self.hw: int | None = None
        self.min_work = self.max_work = 0
        self.stats = MemoryStats()
        self.fast = fast
        # sparse read: where asked, else (fast) on CPU, where the CSR product is fast
        self.sparse = sparse
        self._version = 0  # bumped on every change of the stored elements
        self._cache: tuple | None = None  # (version, aug_key, scale, values_t, n_long)

    # ------------------------------------------------------------------------ read
    def match_memory(self, query_key: torch.Tensor, selection: torch.Tensor | None) -> torch.Tensor:
        """query_key [1, CK, h, w] -> readout [1, K, CV, h, w]; updates usage counters."""
        h, w = query_key.shape[-2:]
        qk = query_key.flatten(start_dim=2)
        qe = selection.flatten(start_dim=2) if selection is not None else None
        sparse = (self.fast and qk.device.type == "cpu") if self.sparse is None else self.sparse
        if sparse and qe is not None:
            with torch.autocast(qk.device.type, enabled=False):
                return self._match_sparse(qk[0].float(), qe[0].float(), h, w)
        long_on = self.long is not None and self.long.engaged()
        if long_on:
            n_long = self.long.size
            mem_key = torch.cat([self.long.key, self.work.key], -1)
            mem_s = torch.cat([self.long.shrinkage, self.work.shrinkage], -1)
            values = torch.cat([self.long.value, self.work.value], -1)
        else:
            n_long = 0
            mem_key, mem_s, values = self.work.key, self.work.shrinkage, self.work.value
        similarity = get_similarity(mem_key, mem_s, qk, qe)
        affinity = topk_softmax(similarity, self.top_k)
        if self.enable_long_term:
            usage = affinity.sum(dim=2)  # [1, N]
            self.work.update_usage(usage[:, n_long:].flatten())
            if long_on:
                self.long.update_usage(usage[:, :n_long].flatten())
        readout = values @ affinity  # [K, CV, HW]
        return readout.reshape(1, readout.shape[0], readout.shape[1], h, w)

    def _memory_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """[long, work]-concatenated key [CK, N], the similarity operands and values^T,
        rebuilt only when memory changed (every mem_every frames)."""
        if self._cache is not None and self._cache[0] == self._version:
            return self._cache[1:]
        stores = [s for s in (self.long, self.work) if s is not None and s.engaged()]
        # fp32 whatever the precision: the three-term similarity cancels (bf16 inputs would
        # move the top-k), and sparse products exist for fp32 only on CPU (MKL).
        mk = torch.cat([s.key for s in stores], -1)[0].float()  # [CK, N]
        ms = torch.cat([s.shrinkage for s in stores], -1)[0].float()  # [1, N]
        mv = torch.cat([s.value for s in stores], -1).float()  # [K, CV, N]
        ck = mk.shape[0]
        # S^T = [e; qk*e; sum e*qk^2]^T @ [-mk^2; 2 mk; -1], then * s / sqrt(CK)
        aug = torch.cat([-mk.pow(2), 2 * mk, -torch.ones_like(mk[:1])], 0)
        scale = ms / math.sqrt(ck)
        values_t = mv.reshape(-1, mv.shape[-1]).t().contiguous()  # [N, K*CV]
        n_long = self.long.size if (self.long is not None and self.long.engaged()) else 0
        self._cache = (self._version, aug, scale, values_t, n_long)
        return aug, scale, values_t, n_long

    def _match_sparse(self, qk: torch.Tensor, qe: torch.Tensor, h: int, w: int) -> torch.Tensor:
        aug, scale, values_t, n_long = self._memory_tensors()
        n = aug.shape[1]
        hw = qk.shape[1]
        query = torch.cat([qe, qk * qe, (qe * qk.pow(2)).sum(0, keepdim=True)], 0)
        sim_t = (query.t() @ aug).mul_(scale)  # [HW, N]
        k = min(self.top_k, n)
        top, idx = sim_t.topk(k, dim=1)
        del sim_t
        weight = torch.exp(top - top[:, :1])  # max-subtracted
        weight = weight / weight.sum(dim=1, keepdim=True)
        idx, order = idx.sort(dim=1)  # CSR: sorted columns
        weight = weight.gather(1, order)
        with warnings.catch_warnings():  # "sparse CSR is beta": the op used here is stable
            warnings.simplefilter("ignore", UserWarning)
            affinity_t = torch.sparse_csr_tensor(
                torch.arange(0, hw * k + 1, k, device=idx.device),
                idx.flatten(),
                weight.flatten(),
                size=(hw, n),
                check_invariants=False,
            )
        readout = (affinity_t @ values_t).t()  # [K*CV, HW]
        if self.enable_long_term:
            usage = torch.zeros(n, dtype=weight.dtype, device=weight.device)
            usage.index_add_(0, idx.flatten(), weight.flatten())
            self.work.update_usage(usage[n_long:])
            if n_long:
                self.long.update_usage(usage[:n_long])
        k_obj = self.work.value.shape[0]
        return readout.reshape(1, k_obj, -1, h, w)

    # ----------------------------------------------------------------------- write
    def add_memory(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor,
        value: torch.Tensor,
        selection: torch.Tensor | None,
    ) -> None:
        """key [1, CK, h, w], shrinkage [1, 1, h, w], value [1, K, CV, h, w]."""
        if self.hw is None:
            self.hw = int(key.shape[-2] * key.shape[-1])
            self.min_work = self.min_mt_frames * self.hw
            self.max_work = self.max_mt_frames * self.hw
        key = key.flatten(start_dim=2)
        shrinkage = shrinkage.flatten(start_dim=2)
        value = value[0].flatten(start_dim=2)
        if selection is not None and self.enable_long_term:
            selection = selection.flatten(start_dim=2)
        else:
            selection = None
        self.work.add(key, value, shrinkage, selection)
        self._version += 1
        if self.enable_long_term and self.work.size >= self.max_work:
            cap = self.max_long_elements - self.num_prototypes
            if self.long.size >= cap:
                self.stats.removed_long_term += self.long.remove_obsolete(cap)
            self._compress()
            self._version += 1

    def _compress(self) -> None:
        """Consolidate work elements [HW, size - min_work + HW) into long-term prototypes.
        The first memory frame and the newest min_mid_term_frames - 1 frames stay."""
        start = self.hw
        end = self.work.size - self.min_work + self.hw
        if end <= start:
            return
        w = self.work
        cand_key = w.key[:, :, start:end]
        cand_s = w.shrinkage[:, :, start:end]
        cand_e = w.selection[:, :, start:end] if w.selection is not None else None
        cand_v = w.value[:, :, start:end]
        usage = w.get_usage()[:, :, start:end].flatten()
        n_proto = min(self.num_prototypes, int(usage.numel()))
        idx = torch.topk(usage, k=n_proto, dim=-1, sorted=True).indices
        proto_key = cand_key[:, :, idx]
        proto_e = cand_e[:, :, idx] if cand_e is not None else None
        affinity = full_softmax(get_similarity(cand_key, cand_s, proto_key, proto_e))
        proto_value = cand_v @ affinity
        proto_s = cand_s @ affinity
        w.remove_range(start, end)
        self.long.add(proto_key, proto_value, proto_s, None)
        self.stats.consolidations += 1

    # ---------------------------------------------------------------------- hidden
    def create_hidden(self, num_objects: int, key: torch.Tensor) -> None:
        """Zero hidden state [1, K, hidden_dim, h, w] (none when hidden_dim is 0)."""
        if self.hidden_dim > 0 and self.hidden is None:
            h, w = key.shape[-2:]
            # float32 like upstream even when keys come out of fp16 autocast
            dtype = torch.float32 if key.dtype in (torch.float16, torch.bfloat16) else key.dtype
            self.hidden = torch.zeros(
                (1, num_objects, self.hidden_dim, h, w), device=key.device, dtype=dtype
            )

    @property
    def work_size(self) -> int:
        return self.work.size

    @property
    def long_size(self) -> int:
        return 0 if self.long is None else self.long.size
