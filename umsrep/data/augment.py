"""Augmentation for what unseen radiographs meet: black bands and frames, gamma, washed-out films.

``data.augment: cxr_robust`` is ``cxr`` (``umsrep.data.dataset.build_cxr_augment``) plus the
transforms here. It exists because models trained on Shenzhen alone marked the black letterbox
band at the bottom of Montgomery images as lung, and meet JSRT's digitised films (mean gray
about 0.78 on 0-1, standard deviation about 0.17, against Shenzhen's 0.62 and 0.26) washed out.

Every transform works on the dataset's tensors *before* mean normalization: the image a
``tv_tensors.Image`` ``[1, S, S]`` float on 0-1, the masks one ``tv_tensors.Mask`` ``[C, S, S]``
uint8 0/1 (the lung mask and every further mask column a task reads, so all move together).
Each applies with probability ``p`` and draws its parameters from torch's global generator, so
a seeded run (``torch.manual_seed``, the DataLoader's per-worker seeds) repeats itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from umsrep.data.dataset import Augment, build_cxr_augment

AUGMENTS: tuple[str, ...] = ("none", "cxr", "cxr_robust", "cxr_robust_sharpness")


def _draw(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _happens(p: float) -> bool:
    return bool(torch.rand(()) < p)


class RandomBorderBands(v2.Transform):
    """Black band(s) at the image's edges: image and every mask are 0 under a band.

    One side (top, bottom, left or right) gets a band ``thickness`` (a fraction of the side)
    thick; with probability ``pair`` the opposite side gets one too, as a letterbox does. The
    masks are zeroed there because no lung is visible in a black band (Montgomery's copies
    have bands of 14-18 % of the height at the bottom).
    """

    def __init__(self, p: float = 0.4, thickness: tuple[float, float] = (0.03, 0.25),
                 pair: float = 0.5) -> None:
        super().__init__()
        self.p, self.thickness, self.pair = float(p), (float(thickness[0]),
                                                        float(thickness[1])), float(pair)

    def make_params(self, flat_inputs: list) -> dict:
        if not _happens(self.p):
            return {"bands": []}
        side = int(torch.randint(0, 4, ()))  # 0 top, 1 bottom, 2 left, 3 right
        bands = [(side, _draw(*self.thickness))]
        if _happens(self.pair):
            bands.append((side ^ 1, _draw(*self.thickness)))  # 0<->1, 2<->3
        return {"bands": bands}

    def transform(self, inpt, params: dict):
        if not params["bands"] or not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        out = inpt.clone()
        h, w = out.shape[-2:]
        for side, fraction in params["bands"]:
            n = max(1, round(fraction * (h if side < 2 else w)))
            if side == 0:
                out[..., :n, :] = 0
            elif side == 1:
                out[..., h - n:, :] = 0
            elif side == 2:
                out[..., :, :n] = 0
            else:
                out[..., :, w - n:] = 0
        return out


class RandomShrinkFrame(v2.Transform):
    """Shrink the image by a random factor and place it at a random spot in a black frame.

    A radiograph with its film border, or one pasted into a larger black canvas. The masks are
    shrunk with it (nearest neighbour) and are 0 in the frame.
    """

    def __init__(self, p: float = 0.25, scale: tuple[float, float] = (0.7, 0.95)) -> None:
        super().__init__()
        self.p, self.scale = float(p), (float(scale[0]), float(scale[1]))

    def make_params(self, flat_inputs: list) -> dict:
        if not _happens(self.p):
            return {"scale": None}
        return {"scale": _draw(*self.scale), "x": float(torch.rand(())),
                "y": float(torch.rand(()))}

    def transform(self, inpt, params: dict):
        if params["scale"] is None or not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        h, w = inpt.shape[-2:]
        sh, sw = max(1, round(h * params["scale"])), max(1, round(w * params["scale"]))
        small = v2.functional.resize(inpt, [sh, sw], antialias=True)
        top, left = round(params["y"] * (h - sh)), round(params["x"] * (w - sw))
        return v2.functional.pad(small, [left, top, w - sw - left, h - sh - top], fill=0)


class RandomGamma(v2.Transform):
    """``image ** gamma`` on 0-1 (the image only): keeps 0 and 1 and the order of gray levels.

    Gamma below 1 brightens the mid-tones (a film's different characteristic curve), above 1
    darkens them.
    """

    def __init__(self, p: float = 0.5, gamma: tuple[float, float] = (0.6, 1.6)) -> None:
        super().__init__()
        self.p, self.gamma = float(p), (float(gamma[0]), float(gamma[1]))

    def make_params(self, flat_inputs: list) -> dict:
        return {"gamma": _draw(*self.gamma) if _happens(self.p) else None}

    def transform(self, inpt, params: dict):
        if params["gamma"] is None or not isinstance(inpt, tv_tensors.Image):
            return inpt
        return tv_tensors.wrap(inpt.clamp(0, 1) ** params["gamma"], like=inpt)


class RandomWashout(v2.Transform):
    """Contrast compressed toward a light gray, as on digitised films (the image only).

    The 0-1 range is mapped linearly onto ``[floor, ceiling]``: a Shenzhen image (mean 0.62,
    std 0.26) with floor 0.3 and ceiling 0.95 gets mean 0.70 and std 0.17, near JSRT's look.
    Monotone, so no structure is lost, only contrast.
    """

    def __init__(self, p: float = 0.3, floor: tuple[float, float] = (0.15, 0.45),
                 ceiling: tuple[float, float] = (0.9, 1.0)) -> None:
        super().__init__()
        self.p = float(p)
        self.floor, self.ceiling = (float(floor[0]), float(floor[1])), (float(ceiling[0]),
                                                                         float(ceiling[1]))

    def make_params(self, flat_inputs: list) -> dict:
        if not _happens(self.p):
            return {"floor": None}
        return {"floor": _draw(*self.floor), "ceiling": _draw(*self.ceiling)}

    def transform(self, inpt, params: dict):
        if params["floor"] is None or not isinstance(inpt, tv_tensors.Image):
            return inpt
        lo, hi = params["floor"], params["ceiling"]
        return tv_tensors.wrap(lo + (hi - lo) * inpt.clamp(0, 1), like=inpt)


class RandomSharpness(v2.Transform):
    """A film blurred or sharpened (the image only): half of the drawn images get a Gaussian
    blur (sigma ``blur``, in pixels), the other half an unsharp mask ``x + a (x - blur_1(x))``
    (``a`` from ``amount``), clamped to 0-1.

    Why: sites differ in sharpness far more than in anything the other transforms vary. At
    256 px JSRT's films carry 1.9e-4 of 3x3 high-frequency energy, Shenzhen's and Montgomery's
    13e-4; cxr_public's joint lung head trained at 256 px on Shenzhen scored JSRT at Dice 0.73,
    and 0.94 once the JSRT films were unsharp-masked (a = 1) at test time (fold 0; the note in
    sweeps/cxr_public.yaml).
    """

    def __init__(self, p: float = 0.4, blur: tuple[float, float] = (0.5, 1.5),
                 amount: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        self.p, self.blur, self.amount = float(p), tuple(map(float, blur)), tuple(map(float,
                                                                                     amount))

    def make_params(self, flat_inputs: list) -> dict:
        if not _happens(self.p):
            return {"sigma": None}
        if _happens(0.5):
            return {"sigma": _draw(*self.blur), "amount": 0.0}
        return {"sigma": 1.0, "amount": _draw(*self.amount)}

    def transform(self, inpt, params: dict):
        if params["sigma"] is None or not isinstance(inpt, tv_tensors.Image):
            return inpt
        return tv_tensors.wrap(_sharpness(inpt.as_subclass(torch.Tensor), params), like=inpt)


def _sharpness(image: torch.Tensor, params: dict) -> torch.Tensor:
    sigma = params["sigma"]
    blurred = v2.functional.gaussian_blur(image, [2 * math.ceil(3 * sigma) + 1] * 2, [sigma])
    if not params["amount"]:
        return blurred.clamp(0, 1)
    return (image + params["amount"] * (image - blurred)).clamp(0, 1)


def build_cxr_robust_augment(
    gamma: float = 0.5,
    washout: float = 0.3,
    frame: float = 0.25,
    bands: float = 0.4,
    geometry: float = 0.5,
    sharpness: float = 0.0,
) -> v2.Compose:
    """``cxr`` plus gamma, washout, a shrunk image in a black frame and black edge bands
    (and, with ``sharpness``, a blurred or sharpened film).

    The arguments are each transform's probability. Intensity first (on the image's own
    content, so that what the geometry and the bands add stays pure black, as real padding
    is), then ``cxr``'s geometry and brightness/contrast jitter, then the frame and the bands.
    No horizontal flip (the heart would change side).
    """
    return v2.Compose([
        RandomGamma(gamma),
        RandomWashout(washout),
        *([RandomSharpness(sharpness)] if sharpness > 0 else []),  # at 0 it draws nothing
        build_cxr_augment(geometry=geometry),
        RandomShrinkFrame(frame),
        RandomBorderBands(bands),
    ])


def build_augment(name: str) -> Augment | None:
    """The training augmentation ``data.augment`` names (None for ``"none"``)."""
    if name == "cxr":
        return CxrAugment()
    if name == "cxr_robust":
        return CxrAugment(robust=True)
    if name == "cxr_robust_sharpness":
        return CxrAugment(robust=True, sharpness=0.4)
    if name == "none":
        return None
    raise ValueError(f"data.augment {name!r} unknown; use one of {list(AUGMENTS)}")



# ----------------------------------------------------------------------------- fast path
class CxrAugment:
    """``cxr`` / ``cxr_robust`` as one warp per image: what ``build_augment`` returns.

    The same random transforms as the ``v2`` pipelines above (``build_cxr_augment``,
    ``build_cxr_robust_augment``, kept as their readable reference), applied in one pass:
    intensity first (``robust``: gamma, washout; then brightness/contrast jitter), then every
    geometric transform composed into one affine map per image (aspect jitter, rotation,
    translation, zoom and, ``robust``, the shrunk image in a black frame) and applied with one
    ``grid_sample`` to the image (bilinear) and one to the masks (nearest), then (``robust``)
    the black edge bands. Outside the image stays black (0) and mask 0, as real padding.

    ``geometry`` is the probability of the affine part (aspect, rotation, shift, zoom; the
    frame keeps its own ``frame``); an image that draws neither is not resampled at all. Why:
    a bilinear warp of a 128 px image low-passes it (Shenzhen's 3x3 high-frequency energy
    falls from ~43e-4 to ~16e-4), so a model that only ever saw warped images meets the
    sharper, untouched test images as another population. With every image warped,
    ``cxr_public``'s joint TB head put 97 % of held-out Shenzhen above 0.5 (mean probability
    0.92; the same images warped: 0.55). Warping half of them (cxr_public run 12 against run
    11, 3 folds, visible images): held-out TB accuracy 0.60 -> 0.80, MCC 0.29 -> 0.60, AUC
    0.87 -> 0.86 for joint, alternating 0.69 -> 0.78, the baseline 0.50 -> 0.65; held-out
    lung Dice +0.001 to +0.004, Montgomery and JSRT within +-0.006. Nearest-neighbour warps of
    every image (no blur; fold 0, joint) calibrated as well but lost Montgomery lung Dice
    (0.952, worst 0.86) and JSRT (0.934). ``bench/augment_shift.py`` checks a run for the shift.

    Speed: the ``v2`` pipelines cost 1.2-1.4 ms per 128 px image in the training process
    (resize, affine and pad calls per transform and per mask), about a third of a
    ``cxr_public`` stage's time next to a bf16 training step of ~2.5 ms per image; this path
    costs ~0.2 ms. Parameters are drawn from torch's global generator, as the ``v2`` ones, so
    a seeded run repeats itself. Images are square (the cache's ``S x S``).
    """

    def __init__(self, robust: bool = False, rotation: float = 5.0, translate: float = 0.05,
                 scale: tuple[float, float] = (0.9, 1.1),
                 aspect: tuple[float, float] = (0.85, 1.15),
                 brightness: float = 0.1, contrast: float = 0.1, gamma: float = 0.5,
                 washout: float = 0.3, frame: float = 0.25, bands: float = 0.4,
                 geometry: float = 0.5, sharpness: float = 0.0) -> None:
        self.robust, self.geometry = robust, float(geometry)
        # robust only; at 0 nothing is drawn, so cxr_robust's random stream is as before
        self.sharpness = RandomSharpness(sharpness) if robust and sharpness > 0 else None
        self.rotation, self.translate, self.scale, self.aspect = rotation, translate, scale, aspect
        self.brightness, self.contrast = brightness, contrast
        self.gamma = RandomGamma(gamma)
        self.washout = RandomWashout(washout)
        self.frame = RandomShrinkFrame(frame)
        self.bands = RandomBorderBands(bands)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        """``image`` [1, S, S] float 0-1, ``mask`` [C, S, S] uint8 0/1 -> the same, augmented."""
        image = torch.as_tensor(image).as_subclass(torch.Tensor)
        mask = torch.as_tensor(mask).as_subclass(torch.Tensor)
        if self.robust:
            g = self.gamma.make_params([])["gamma"]
            if g is not None:
                image = image.clamp(0, 1) ** g
            w = self.washout.make_params([])
            if w["floor"] is not None:
                image = w["floor"] + (w["ceiling"] - w["floor"]) * image.clamp(0, 1)
            if self.sharpness is not None:
                params = self.sharpness.make_params([])
                if params["sigma"] is not None:
                    image = _sharpness(image, params)
        image = self._jitter(image)
        theta = self._theta()
        if theta is not None:
            image, mask = _warp(image, mask, theta)
        if self.robust:
            params = self.bands.make_params([])
            if params["bands"]:
                image = self.bands.transform(tv_tensors.Image(image), params)
                mask = self.bands.transform(tv_tensors.Mask(mask), params)
                image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        return image, mask

    def _jitter(self, image: torch.Tensor) -> torch.Tensor:
        """Brightness then contrast factors in ``1 +- brightness / contrast`` (ColorJitter's)."""
        b = _draw(1 - self.brightness, 1 + self.brightness) if self.brightness else 1.0
        c = _draw(1 - self.contrast, 1 + self.contrast) if self.contrast else 1.0
        image = (image * b).clamp(0, 1)
        mean = image.mean()
        return ((image - mean) * c + mean).clamp(0, 1)

    def _theta(self) -> torch.Tensor | None:
        """[2, 3]: output -> input coordinates (``affine_grid``'s, normalized to -1..1) of the
        composed forward map frame . affine . aspect; None when neither was drawn."""
        forward = None
        if _happens(self.geometry):
            r = _draw(*self.aspect)
            aspect = torch.diag(torch.tensor([r, 1.0, 1.0]) if int(torch.randint(0, 2, ()))
                                else torch.tensor([1.0, r, 1.0]))
            angle = math.radians(_draw(-self.rotation, self.rotation))
            s = _draw(*self.scale)
            tx, ty = (2 * _draw(-self.translate, self.translate) for _ in range(2))
            cos, sin = math.cos(angle) * s, math.sin(angle) * s
            affine = torch.tensor([[cos, -sin, tx], [sin, cos, ty], [0.0, 0.0, 1.0]])
            forward = affine @ aspect
        if self.robust:
            f = self.frame.make_params([])
            if f["scale"] is not None:
                k = f["scale"]
                frame = torch.tensor([[k, 0.0, (1 - k) * (2 * f["x"] - 1)],
                                      [0.0, k, (1 - k) * (2 * f["y"] - 1)], [0.0, 0.0, 1.0]])
                forward = frame if forward is None else frame @ forward
        return None if forward is None else torch.linalg.inv(forward)[:2]


def _warp(image: torch.Tensor, mask: torch.Tensor,
          theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` [1, S, S] (bilinear) and ``mask`` [C, S, S] (nearest) through ``theta``."""
    grid = F.affine_grid(theta[None].to(image.dtype), [1, 1, *image.shape[-2:]],
                         align_corners=False)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)[0]
    masks = F.grid_sample(mask[None].to(image.dtype), grid, mode="nearest",
                          padding_mode="zeros", align_corners=False)[0]
    return out.clamp(0, 1), masks.to(mask.dtype)
