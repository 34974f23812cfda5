"""Fine-tuning EfficientNet-Lite0 on the labeled images, with a cache of the results.

A linear head is trained together with the backbone (head at 10× the learning rate,
BatchNorm statistics frozen because labeled sets are small) with light augmentation
(pseudo-labeled images, in the second round, with strong augmentation).
Part of the labeled set is held out and its accuracy is reported after every epoch
(``epoch_callback`` gets each epoch's entry — sweeps feed it to their pruner); the best epoch's weights win.
Results are cached in the store by (labeled images, epochs, lr, seed, preprocessing),
so a sweep trial whose extractor settings were seen before pays only for the classifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from src.features.backbone import Preprocessing, create_model, state_digest
from src.features.extraction import decode_workers
from src.features.frozen_prefix import frozen_prefixes, split_forward
from src.core.images import open_image
from src.core import leases
from src.core.ownership import BLOB, EXTRACTOR, MENTION, HELD_EXTRACTOR, Keep, Owner, Pruning, has_table
from src.core.store import Store

log = logging.getLogger(__name__)
EpochCallback = Callable[[dict], None]  # receives {epoch, loss[, val_accuracy]}
EVAL_BATCH = 64  # held-out images per forward pass when scoring an epoch


@dataclass
class FineTuneResult:
    epochs_run: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val_accuracy
    best_val_accuracy: float | None = None
    cached: bool = False


def _crop_flip(img, rng: random.Random, min_scale: float):
    """A random crop of ``min_scale``–1 of the area (the image's aspect ratio), flipped half the time."""
    w, h = img.size
    scale = rng.uniform(min_scale, 1.0)
    cw, ch = max(8, int(w * scale ** 0.5)), max(8, int(h * scale ** 0.5))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    return img.transpose(0) if rng.random() < 0.5 else img  # 0: FLIP_LEFT_RIGHT


def _augment(img, pre: Preprocessing, rng: random.Random) -> np.ndarray:
    """Random resized crop, horizontal flip and mild colour jitter, then the standard transform."""
    from PIL import ImageEnhance

    img = _crop_flip(img, rng, 0.6)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    return pre(img)


GRAY = (128, 128, 128)


def _strong_ops(rng: random.Random) -> list:
    """RandAugment's kind of operations on an RGB image, each with a random magnitude."""
    from PIL import ImageEnhance, ImageFilter, ImageOps

    return [
        ImageOps.autocontrast,
        ImageOps.equalize,
        lambda im: ImageOps.posterize(im, rng.choice([3, 4, 5])),
        lambda im: ImageOps.solarize(im, rng.randint(128, 255)),
        lambda im: ImageEnhance.Color(im).enhance(rng.uniform(0.1, 1.9)),
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(0.4, 1.6)),
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(0.5, 1.5)),
        lambda im: ImageEnhance.Sharpness(im).enhance(rng.uniform(0.1, 1.9)),
        lambda im: im.rotate(rng.uniform(-30, 30), fillcolor=GRAY),
        lambda im: ImageOps.grayscale(im).convert("RGB"),
        lambda im: im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))),
    ]


def _strong_augment(img, pre: Preprocessing, rng: random.Random) -> np.ndarray:
    """Strong augmentation for pseudo-labeled images (Noisy Student, FixMatch's strong view): a crop
    of 35–100 % of the area, flip, two random RandAugment-style operations, then a gray cut-out
    square of 20–40 % of the shorter side, then the standard transform."""
    from PIL import ImageDraw

    img = _crop_flip(img, rng, 0.35)
    for op in rng.sample(_strong_ops(rng), 2):
        img = op(img)
    w, h = img.size
    side = int(min(w, h) * rng.uniform(0.2, 0.4))
    x, y = rng.randint(0, w - side), rng.randint(0, h - side)
    # drawn on a new image (_crop_flip's crop), never on the decoded one later epochs reuse
    ImageDraw.Draw(img).rectangle((x, y, x + side, y + side), fill=GRAY)
    return pre(img)


def _predict(forward, pixels: np.ndarray, pre: Preprocessing, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Class predictions of an eval-mode model's ``forward`` (NHWC float batches, :func:`split_forward`) for
    uint8 HWC ``pixels``, ``batch_size`` images per pass."""
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(pixels), batch_size):
            out.append(forward(pre.normalise(pixels[s:s + batch_size])).argmax(1).numpy())
    return np.concatenate(out)


def _freeze_bn(model) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


FROZEN_BLOCKS = 3  # the stem and blocks 0–2 (112, 56, 28 px) keep their weights: see frozen_prefixes
BLOCKS = 7         # EfficientNet-Lite0's blocks


@dataclass(frozen=True)
class FineTuneSpec:
    """Everything that decides the fine-tuned weights besides the images and labels (the cache key)."""

    epochs: int
    lr: float
    seed: int
    pre: Preprocessing
    batch_size: int = 16
    frozen_blocks: int = FROZEN_BLOCKS
    train_size: int | None = None  # the pixels training batches have (None: pre's); held-out images are at pre's

    def train_pre(self) -> Preprocessing:
        """The transform of the training batches: ``pre`` at :attr:`train_size`."""
        return self.pre if self.train_size in (None, self.pre.image_size) else Preprocessing.for_size(self.train_size)


def freeze_early(model, frozen_blocks: int) -> list:
    """Leave the parameters :func:`frozen_prefixes` names out of training; returns the ones that train."""
    frozen = frozen_prefixes(frozen_blocks)
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))
    return [param for param in model.parameters() if param.requires_grad]


def finetune_key(paths_digests: Sequence[str], labels: Sequence[int], spec: FineTuneSpec,
                 held_out: Sequence[str] = ()) -> str:
    """The cache key of a fine-tune: its images with their labels, the ``held_out`` ones (the digests of the
    images that choose the best epoch: a different split is a different extractor) and ``spec``."""
    h = hashlib.sha256()
    for d, y in sorted(zip(paths_digests, labels)):
        h.update(f"{d}:{y}\n".encode())
    for d in sorted(held_out):
        h.update(f"held:{d}\n".encode())
    own = {"epochs": spec.epochs, "lr": spec.lr, "seed": spec.seed, "pre": spec.pre.key(), "bs": spec.batch_size,
           "recipe": 1, "frozen_blocks": spec.frozen_blocks}
    if spec.train_pre() is not spec.pre:  # keys of fine-tunes at the extraction size stay as they were
        own["train_size"] = spec.train_size
    h.update(json.dumps(own).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class PseudoLabeled:
    """Unlabeled images with pseudo-labels for a fine-tuning round: each epoch trains on the labeled
    fit images plus a fresh seeded sample of ``per_epoch`` of these (decoded when first drawn)."""

    paths: Sequence[Path]
    labels: np.ndarray
    per_epoch: int
    strong: bool = False  # under _strong_augment instead of the light _augment


def _start_model(n_classes: int, start: Path | None):
    """ImageNet weights, or a saved extractor's (``start``) under a new ``n_classes`` head."""
    if start is None:
        return create_model(num_classes=n_classes, pretrained=True)
    import torch

    payload = torch.load(start, map_location="cpu", weights_only=True)
    model = create_model(num_classes=n_classes, pretrained=False)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"{start} does not hold EfficientNet-Lite0 extractor weights")
    return model


def fine_tune(paths: Sequence[Path], labels: np.ndarray, fit_idx: np.ndarray, val_idx: np.ndarray,
              n_classes: int, spec: FineTuneSpec, epoch_callback: EpochCallback | None = None,
              progress: bool = True, start: Path | None = None, extra: PseudoLabeled | None = None):
    """Fine-tune from ImageNet weights (or the extractor saved at ``start``), on ``paths[fit_idx]`` plus,
    per epoch, a sample of ``extra``; the epoch kept is the best on ``paths[val_idx]`` (true labels).
    Returns (model without head, FineTuneResult)."""
    import torch

    epochs, lr, seed = spec.epochs, spec.lr, spec.seed

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = _start_model(n_classes, start)
    result = FineTuneResult()
    if epochs <= 0 or lr <= 0:
        model.reset_classifier(0)
        return model.eval(), result
    freeze_early(model, spec.frozen_blocks)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.") and p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * 10}], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    images = _Images(list(paths), np.asarray(labels), spec.pre, extra)
    with images:
        return _train(model, opt, sched, images, fit_idx, val_idx, spec, result, epoch_callback, progress, rng)


class _Images:
    """The labeled images (decoded once: labeled sets are small) and the pseudo-labeled ones, decoded
    when an epoch first draws them; indices ``>= n_labeled`` are pseudo-labeled."""

    def __init__(self, paths: list, labels: np.ndarray, pre: Preprocessing, extra: PseudoLabeled | None):
        self.n_labeled, self.pre, self.extra = len(paths), pre, extra
        self.paths = paths + list(extra.paths if extra else [])
        self.labels = np.concatenate([labels, np.asarray(extra.labels if extra else [], dtype=np.int64)])
        self.decoded: dict[int, object] = {}
        self.pool = ThreadPoolExecutor(decode_workers())
        self.decode(range(self.n_labeled))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()

    def decode(self, idx) -> None:
        todo = [i for i in idx if i not in self.decoded]
        opened = self.pool.map(lambda i: open_image(self.paths[i], draft_size=self.pre.resize), todo)
        self.decoded.update(zip(todo, opened))

    def draw(self, rng: random.Random) -> list[int]:
        """This epoch's sample of pseudo-labeled images (none without ``extra``)."""
        if self.extra is None or not len(self.extra.paths):
            return []
        drawn = rng.sample(range(self.n_labeled, len(self.paths)), min(self.extra.per_epoch, len(self.extra.paths)))
        self.decode(drawn)
        return drawn

    def batch(self, idx, rng: random.Random, pre: Preprocessing) -> np.ndarray:
        """Augmented inputs under ``pre``: the light augmentation, the strong one for pseudo-labeled images
        when asked."""
        strong = self.extra is not None and self.extra.strong
        return np.stack([(_strong_augment if strong and i >= self.n_labeled else _augment)(
            self.decoded[i], pre, rng) for i in idx])


def _train(model, opt, sched, images: _Images, fit_idx, val_idx, spec: FineTuneSpec, result: FineTuneResult,
           epoch_callback: EpochCallback | None, progress: bool, rng: random.Random):
    import torch
    from src.core.progress import progress_bar

    epochs, pre, batch_size, labels = spec.epochs, spec.pre, spec.batch_size, images.labels
    forward = split_forward(model, spec.frozen_blocks, pre.image_size)  # the frozen blocks in ONNX Runtime
    train_pre = spec.train_pre()
    train_forward = forward if train_pre is pre else split_forward(model, spec.frozen_blocks, train_pre.image_size)
    # held-out inputs kept as uint8 pixels (a quarter of float32) and scored in batches: one forward pass
    # over every held-out image at once held activations of gigabytes at a few hundred images
    val_px = np.stack([pre.pixels(images.decoded[i]) for i in val_idx]) if len(val_idx) else None
    best_state, best_acc = None, -1.0
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        _freeze_bn(model)
        order = list(fit_idx) + images.draw(rng)
        rng.shuffle(order)
        losses = []
        for s in progress_bar(range(0, len(order), batch_size), progress=progress,
                              desc=f"fine-tune epoch {epoch}/{epochs}", leave=False):
            idx = order[s:s + batch_size]
            y = torch.as_tensor(labels[idx])
            loss = torch.nn.functional.cross_entropy(train_forward(images.batch(idx, rng, train_pre)), y,
                                                     label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        entry = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else 0.0}
        if val_px is not None:
            model.eval()
            pred = _predict(forward, val_px, pre)
            entry["val_accuracy"] = float((pred == labels[val_idx]).mean())
            if entry["val_accuracy"] > best_acc:
                best_acc = entry["val_accuracy"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.history.append(entry)
        result.epochs_run = epoch
        log.info("fine-tune epoch %d/%d: loss %.4f%s", epoch, epochs, entry["loss"],
                 f", val_accuracy {entry['val_accuracy']:.4f}" if "val_accuracy" in entry else "")
        if epoch_callback is not None:
            epoch_callback(entry)
    result.seconds = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
        result.best_val_accuracy = best_acc
    model.reset_classifier(0)
    return model.eval(), result


class ExtractorCache:
    """Fine-tuned extractors stored as blobs in the store, keyed by ``finetune_key``."""

    DDL = """CREATE TABLE IF NOT EXISTS finetune_cache (
        key TEXT PRIMARY KEY, blob TEXT NOT NULL, weights_digest TEXT NOT NULL, result TEXT NOT NULL,
        created_at REAL NOT NULL)"""

    def __init__(self, store: Store | None = None):
        self.store = store or Store()
        self.store.ensure_schema("finetune_cache", self.DDL)

    def get(self, key: str) -> tuple[Path, str, FineTuneResult] | None:
        with self.store.read() as con:
            row = con.execute("SELECT blob, weights_digest, result FROM finetune_cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        leases.hold_for_work(self.store, HELD_EXTRACTOR, row["blob"])  # a training in progress keeps what it uses
        if not self.store.has_blob(row["blob"]):
            return None
        res = FineTuneResult(**json.loads(row["result"]))
        res.cached = True
        return self.store.blob_path(row["blob"]), row["weights_digest"], res

    def put(self, key: str, path: Path, weights_digest: str, result: FineTuneResult) -> None:
        blob = self.store.put_file(path, link=False)
        leases.hold_for_work(self.store, HELD_EXTRACTOR, blob)  # before the row: gc sees the hold with it
        data = {k: v for k, v in result.__dict__.items() if k != "cached"}
        with self.store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO finetune_cache VALUES (?, ?, ?, ?, ?)",
                        (key, blob, weights_digest, json.dumps(data), time.time()))


def weights_digest(model) -> str:
    return state_digest(model.state_dict())


# -- what gc and du ask the fine-tune cache (src.core.ownership) -----------------------------
def _cached_blobs(con, pruned: frozenset[str]):
    if has_table(con, "finetune_cache"):
        yield from ((b, "fine-tuned extractor") for k, b in con.execute("SELECT key, blob FROM finetune_cache")
                    if k not in pruned)


def _recent_extractors(con, cutoff: float):
    """Extractors fine-tuned since ``cutoff``."""
    if has_table(con, "finetune_cache"):
        yield from (b for (b,) in con.execute("SELECT blob FROM finetune_cache WHERE created_at >= ?", (cutoff,)))


def prunable(_store, con, keep: Keep) -> list[Pruning]:
    """Entries older than the cutoff whose extractor nothing keeps (row here; its blob goes with the orphans)."""
    if not has_table(con, "finetune_cache"):
        return []
    doomed = [(k, b) for k, b in con.execute("SELECT key, blob FROM finetune_cache WHERE created_at < ?",
                                               (keep.cutoff,)) if b not in keep.extractors]
    if not doomed:
        return []
    keys = [k for k, _ in doomed]
    return [Pruning("fine-tuned extractors", keys=keys, items=sorted({b for _, b in doomed}), count=len(keys),
                    releases=frozenset(b for _, b in doomed),
                    delete=lambda con: con.executemany("DELETE FROM finetune_cache WHERE key = ?",
                                                       [(k,) for k in keys]))]


OWNER = Owner("features.finetune", tables=("finetune_cache",),
              digests={"finetune_cache.blob": (BLOB, EXTRACTOR), "finetune_cache.weights_digest": MENTION,
                       "finetune_cache.key": MENTION},
              blob_kinds=("fine-tuned extractor",), blobs=_cached_blobs, extractors=_recent_extractors,
              prune=prunable)
