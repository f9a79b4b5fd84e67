"""Knowledge distillation from the original (the teacher) into a student, as a `loss_fn` for
finetune.train: soft-logit KL at a temperature mixed with the task loss (Hinton et al., 2015),
optionally with hidden-state and attention-map matching between mapped layers (TinyBERT).

Teacher logits depend only on the token ids, so with logit-only distillation they are cached per
text and the teacher runs once per distinct example, not once per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import CompressError
from ..families import of as family_of


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 2.0     # softens both distributions; the KL term is scaled by T^2
    alpha: float = 0.5           # weight of the soft (teacher) loss; 1 - alpha goes to the task loss
    hidden_weight: float = 0.0   # MSE between mapped layers' hidden states (and the embeddings)
    attention_weight: float = 0.0  # MSE between mapped layers' attention maps (kept heads only)
    layer_map: str = "uniform"   # uniform: student layer j ↔ teacher layer (j+1)·T/S − 1; kept: the layer it was copied from

    def __post_init__(self):
        if self.temperature <= 0:
            raise CompressError(f"distillation temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise CompressError(f"distillation alpha must be in [0, 1], got {self.alpha}")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise CompressError("distillation hidden_weight and attention_weight must be >= 0")
        if self.layer_map not in ("uniform", "kept"):
            raise CompressError(f"distillation layer_map must be uniform or kept, got {self.layer_map!r}")


def map_layers(student, teacher, how: str) -> list[int]:
    """Teacher layer index matched to each student layer."""
    from .prune import get_structure

    s, t = len(family_of(student).layers(student)), len(family_of(teacher).layers(teacher))
    if how == "kept":
        return [min(i, t - 1) for i in get_structure(student)["layers"]]
    return [max(0, round((j + 1) * t / s) - 1) for j in range(s)]


class _Recorder:
    """Forward hooks that keep the embedding output, each layer's output and its attention map."""

    def __init__(self, model, attentions: bool):
        self.hidden, self.attn, self.hooks = {}, {}, []
        fam = family_of(model)
        self.hooks.append(fam.get(model, fam.embeddings).register_forward_hook(lambda m, a, o: self.hidden.__setitem__(-1, o)))
        for i, layer in enumerate(fam.layers(model)):
            self.hooks.append(layer.register_forward_hook(self._keep(self.hidden, i, 0)))
            if attentions:
                self.hooks.append(fam.get(layer, fam.attention).register_forward_hook(self._keep(self.attn, i, 1)))

    @staticmethod
    def _keep(store, i, pos):
        def fn(mod, args, out):
            store[i] = out[pos] if isinstance(out, tuple) else out
        return fn

    def remove(self):
        for h in self.hooks:
            h.remove()


class Distiller:
    """`loss_fn(model, inputs, labels, outputs)` for finetune.train; use as a context manager.

    `history` keeps every step's total loss and parts (the tests check that they fall).
    """

    def __init__(self, teacher, student, cfg: DistillConfig):
        self.teacher, self.student, self.cfg = teacher.eval(), student, cfg
        self.layer_map = map_layers(student, teacher, cfg.layer_map)
        self.match_states = cfg.hidden_weight > 0 or cfg.attention_weight > 0
        self.cache: dict = {}
        self.history: list = []
        self._rec_s = self._rec_t = None
        if cfg.attention_weight > 0:
            # Attention maps exist only on the eager path (SDPA never materialises them).
            student.set_attn_implementation("eager")
            teacher.set_attn_implementation("eager")
        if cfg.hidden_weight > 0 and student.config.hidden_size != teacher.config.hidden_size:
            raise CompressError("hidden-state matching needs the student and teacher to share hidden_size")

    def __enter__(self):
        if self.match_states:
            self._rec_s = _Recorder(self.student, self.cfg.attention_weight > 0)
            self._rec_t = _Recorder(self.teacher, self.cfg.attention_weight > 0)
        return self

    def __exit__(self, *exc):
        for r in (self._rec_s, self._rec_t):
            if r is not None:
                r.remove()
        self._rec_s = self._rec_t = None
        return False

    @staticmethod
    def _keys(inputs) -> list:
        ids = inputs["input_ids"].cpu().numpy()
        types = inputs.get("token_type_ids")
        types = types.cpu().numpy() if types is not None else ids * 0
        lens = inputs["attention_mask"].sum(1).cpu().numpy()
        return [ids[i, :n].tobytes() + types[i, :n].tobytes() for i, n in enumerate(lens)]

    def teacher_logits(self, inputs):
        """Teacher logits for a batch: cached per example unless layers are matched too."""
        import torch

        self.teacher.to(inputs["input_ids"].device)
        if self.match_states:
            with torch.no_grad():
                return self.teacher(**inputs).logits.float()
        keys = self._keys(inputs)
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            idx = torch.as_tensor(missing, device=inputs["input_ids"].device)
            sub = {k: v.index_select(0, idx) for k, v in inputs.items()}
            with torch.no_grad():
                out = self.teacher(**sub).logits.float()
            lens = inputs["attention_mask"].sum(1).tolist()
            for j, i in enumerate(missing):
                # Token logits are cached at the example's own length and padded back to the batch's.
                self.cache[keys[i]] = (out[j, :lens[i]] if out.ndim == 3 else out[j]).cpu()
        got = [self.cache[k] for k in keys]
        if got[0].ndim == 2:
            S = inputs["input_ids"].shape[1]
            got = [torch.nn.functional.pad(g, (0, 0, 0, S - g.shape[0])) for g in got]
        return torch.stack(got).to(inputs["input_ids"].device)

    def __call__(self, model, inputs, labels, outputs):
        import torch
        import torch.nn.functional as F

        c = self.cfg
        s_logits = outputs.logits.float()
        t_logits = self.teacher_logits(inputs)
        T = c.temperature
        if labels.ndim == 2:  # token task: soft targets at the labelled positions only (first pieces, no padding/specials)
            from ..tasks.token import IGNORE, loss as token_loss

            real = labels != IGNORE
            s_pos, t_pos = s_logits[real], t_logits[real]
            soft = (F.kl_div(F.log_softmax(s_pos / T, -1), F.softmax(t_pos / T, -1), reduction="batchmean") * T * T
                    if len(s_pos) else s_logits.sum() * 0.0)
            hard = token_loss(s_logits, labels)
        else:
            soft = F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(t_logits / T, -1), reduction="batchmean") * T * T
            hard = F.cross_entropy(s_logits, labels)
        loss = c.alpha * soft + (1 - c.alpha) * hard
        parts = {"soft": float(soft.detach()), "hard": float(hard.detach())}
        if self.match_states:
            mask = inputs["attention_mask"].float()
            if c.hidden_weight > 0:
                hid = self._hidden_loss(mask)
                loss = loss + c.hidden_weight * hid
                parts["hidden"] = float(hid.detach())
            if c.attention_weight > 0:
                att = self._attention_loss(mask)
                loss = loss + c.attention_weight * att
                parts["attention"] = float(att.detach())
        self.history.append({"loss": float(loss.detach()), **parts})
        return loss

    def _hidden_loss(self, mask):
        s, t = self._rec_s.hidden, self._rec_t.hidden
        pairs = [(-1, -1)] + list(enumerate(self.layer_map))
        total = 0.0
        denom = mask.sum() * s[-1].shape[-1]
        for js, jt in pairs:
            diff = (s[js].float() - t[jt].float().detach()) ** 2
            total = total + (diff * mask[:, :, None]).sum() / denom
        return total / len(pairs)

    def _attention_loss(self, mask):
        from .prune import get_structure

        heads = get_structure(self.student)["heads"]
        t_heads = get_structure(self.teacher)["heads"]
        s, t = self._rec_s.attn, self._rec_t.attn
        total = 0.0
        rows = mask[:, None, :, None]  # only real query positions count
        for js, jt in enumerate(self.layer_map):
            # Student head k is the teacher head it was sliced from (same original index).
            pos = {h: i for i, h in enumerate(t_heads[jt])}
            sel = [pos.get(h) for h in heads[js]]
            if any(p is None for p in sel):
                sel = list(range(s[js].shape[1]))[: t[jt].shape[1]]
            ta = t[jt][:, sel].float().detach()
            sa = s[js][:, : len(sel)].float()
            total = total + (((sa - ta) ** 2) * rows).sum() / (rows.sum() * len(sel) * sa.shape[-1])
        return total / len(self.layer_map)
