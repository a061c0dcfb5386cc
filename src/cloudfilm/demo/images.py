"""Body-like synthetic pixels: chest CT, head MR, chest radiograph, abdominal ultrasound.

The anatomy is a handful of ellipses with plausible values (HU for CT, relative signal for
MR, attenuation for DR, echogenicity for US) plus texture and noise, so that windowing,
rendering and compression behave like real images rather than like constant pixels. Each
generator takes a seeded ``numpy`` generator: the same seed paints the same pixels.
The CT phantom follows ``bench/synth.py`` (which ``src/`` must not import).
"""

from __future__ import annotations

import math

import numpy as np

CT_FOV_MM = 380.0  # typical adult body reconstruction field of view
MR_FOV_MM = 240.0  # typical adult head field of view


def _grid(size: int, fov: float) -> np.ndarray:
    """Pixel centres in mm along one axis, centred on 0."""
    return ((np.arange(size, dtype=np.float32) + 0.5) * fov / size - fov / 2).astype(np.float32)


def _ellipse(img: np.ndarray, axis: np.ndarray, cx: float, cy: float, a: float, b: float,
             value: float | np.ndarray) -> None:
    """Set ``value`` inside an ellipse; only its bounding box is computed (speed)."""
    if a <= 0 or b <= 0:
        return
    step = float(axis[1] - axis[0])
    half = float(-axis[0]) + step / 2
    n = len(axis)
    rows = slice(int(max(0, (cy - b + half) / step)), int(min(n, (cy + b + half) / step + 1)))
    cols = slice(int(max(0, (cx - a + half) / step)), int(min(n, (cx + a + half) / step + 1)))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return
    dx = ((axis[cols] - cx) / a) ** 2
    dy = ((axis[rows] - cy) / b) ** 2
    inside = (dx[None, :] + dy[:, None]) < 1.0
    sub = img[rows, cols]
    if isinstance(value, np.ndarray):
        sub[inside] = value[rows, cols][inside]
    else:
        sub[inside] = value


def _blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur (twice, close to Gaussian) with cumulative sums: O(pixels)."""
    out = img.astype(np.float32)
    for _ in range(2):
        for axis in (0, 1):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius + 1, radius)
            c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float64)
            hi = np.take(c, np.arange(2 * radius + 1, c.shape[axis]), axis=axis)
            lo = np.take(c, np.arange(0, c.shape[axis] - 2 * radius - 1), axis=axis)
            out = ((hi - lo) / (2 * radius + 1)).astype(np.float32)
    return out


def ct_chest_slice(size: int, t: float, rng: np.random.Generator, ribs: np.ndarray) -> np.ndarray:
    """HU of an axial chest slice at relative position ``t`` (0 = apex, 1 = upper abdomen).

    ``ribs`` holds 12 phases (one per rib pair) so ribs come and go along z consistently
    within a series.
    """
    x = _grid(size, CT_FOV_MM)
    img = np.full((size, size), -1000.0, dtype=np.float32)
    a, b, cy = 165 + 10 * math.sin(math.pi * t), 110.0, -10.0
    # Carbon-fibre table top under the patient with a hollow core.
    table = np.abs(x - (cy + b + 13))[:, None] < 9
    img[table & (np.abs(x) < 215)[None, :]] = 150.0
    img[(np.abs(x - (cy + b + 13)) < 5)[:, None] & (np.abs(x) < 200)[None, :]] = -700.0
    fat, muscle = 14.0, 9.0
    _ellipse(img, x, 0, cy, a, b, -100.0)
    _ellipse(img, x, 0, cy, a - fat, b - fat, 55.0)
    ai, bi = a - fat - muscle, b - fat - muscle
    field = 35 + 12 * np.sin(x / 37 + 3 * t)[None, :] * np.cos(x / 29 - 2 * t)[:, None]
    _ellipse(img, x, 0, cy, ai, bi, field)
    lung = math.sin(math.pi * min(1.0, 0.15 + 0.85 * t)) ** 0.5
    tex = -850 + 45 * np.sin(x / 6 + 9 * t)[None, :] * np.sin(x / 7 - 7 * t)[:, None]
    for side in (-1, 1):
        _ellipse(img, x, side * 0.48 * ai, cy - 5, 0.36 * ai * lung, 0.78 * bi * lung, tex)
        # Pulmonary vessels: small bright dots branching out from the hila.
        for k in range(6):
            ang = 0.9 * k + 3 * t
            r = 20 + 9 * k
            _ellipse(img, x, side * (0.3 * ai + r * abs(math.cos(ang))), cy - 5 + r * math.sin(ang),
                     2.5, 2.5, 40.0)
    heart = math.sin(math.pi * min(1.0, max(0.0, (t - 0.25) / 0.75)))
    _ellipse(img, x, 22, cy - 18, 58 * heart, 47 * heart, 42.0)
    for k, phase in enumerate(ribs):
        if math.sin(40 * t + phase) > -0.2:
            ang = math.radians(200 + 140 * (k % 6) / 5 + 180 * (k // 6))
            rx, ry = (ai + 4) * math.cos(ang), cy + (bi + 4) * math.sin(ang)
            _ellipse(img, x, rx, ry, 7, 5, 750.0)
            _ellipse(img, x, rx, ry, 4.5, 2.5, 200.0)
    sy = cy + b - 58
    _ellipse(img, x, 0, sy, 20, 17, 900.0)
    _ellipse(img, x, 0, sy, 17, 14, 260.0)
    _ellipse(img, x, 0, sy + 25, 8, 7, 20.0)
    _ellipse(img, x, 0, sy + 40, 5, 12, 700.0)
    _ellipse(img, x, 14, sy - 32, 12, 12, 45.0)  # descending aorta
    _ellipse(img, x, 0, cy - bi + 10, 9, 7, -950.0)  # trachea
    img += rng.standard_normal((size, size), dtype=np.float32) * 12.0
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    img[r2 > (CT_FOV_MM / 2) ** 2] = -3024.0  # scanners pad outside the reconstruction circle
    return img


def paint_sphere(img: np.ndarray, fov: float, sphere: tuple[float, float, float, float],
                 z: float, value: float) -> None:
    """Paint the cross-section at ``z`` of a sphere (centre x, y, z, diameter in mm) on an
    axial slice whose field of view is centred on 0 (a lung nodule for the AI demo)."""
    cx, cy, cz, diameter = sphere
    r2 = (diameter / 2) ** 2 - (z - cz) ** 2
    if r2 > 0:
        _ellipse(img, _grid(img.shape[0], fov), cx, cy, math.sqrt(r2), math.sqrt(r2), value)


# Relative signal of head tissues per MR weighting: (scalp fat, skull, grey, white, CSF).
MR_CONTRASTS: dict[str, tuple[float, float, float, float, float]] = {
    "T1": (900.0, 60.0, 480.0, 640.0, 120.0),
    "T2": (500.0, 40.0, 620.0, 480.0, 1400.0),
    "FLAIR": (600.0, 40.0, 640.0, 480.0, 80.0),
    "DWI": (120.0, 20.0, 420.0, 380.0, 90.0),
}


def mr_head_slice(size: int, t: float, weighting: str, rng: np.random.Generator) -> np.ndarray:
    """Signal of an axial head slice at ``t`` (0 = skull base, 1 = vertex), 12-bit range."""
    fat, skull, grey, white, csf = MR_CONTRASTS[weighting]
    x = _grid(size, MR_FOV_MM)
    img = np.zeros((size, size), dtype=np.float32)
    scale = math.sqrt(max(0.05, 1 - (1.6 * (t - 0.45)) ** 2))  # the head narrows at both ends
    a, b = 72 * scale + 8, 92 * scale + 8
    _ellipse(img, x, 0, 0, a, b, fat)
    _ellipse(img, x, 0, 0, a - 5, b - 5, skull)
    _ellipse(img, x, 0, 0, a - 10, b - 10, csf)
    # Grey matter ribbon with gyri: a wavy field between cortex and white matter.
    gyri = grey + 60 * np.sin(x / 4.5)[None, :] * np.sin(x / 5.5)[:, None]
    _ellipse(img, x, 0, 0, a - 12, b - 12, gyri)
    if t > 0.2:
        _ellipse(img, x, 0, 2, (a - 24) * 0.95, (b - 24) * 0.95, white)
    if 0.35 < t < 0.75:  # lateral ventricles
        v = math.sin(math.pi * (t - 0.35) / 0.4)
        for side in (-1, 1):
            _ellipse(img, x, side * 9, -8, 6 * v, 26 * v, csf)
        _ellipse(img, x, 0, 20, 4, 6, csf)  # third ventricle / pineal region
    if t < 0.25:  # orbits and globes low in the stack
        for side in (-1, 1):
            _ellipse(img, x, side * 32, -(b - 18), 12, 11, fat)
            _ellipse(img, x, side * 32, -(b - 18), 9, 9, csf * 0.8)
    img = _blur(img, 1)
    img += np.abs(rng.standard_normal((size, size), dtype=np.float32)) * 18.0  # Rician floor
    return np.clip(img, 0, 4095)


def dr_chest(size: int, rng: np.random.Generator) -> np.ndarray:
    """A PA chest radiograph, 12-bit, MONOCHROME2 (bone bright, lungs dark)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    img = np.full((size, size), 250.0, dtype=np.float32)  # direct exposure: dark
    body = ((x / 0.42) ** 2 + ((y - 0.05) / 0.62) ** 2) < 1
    img[body] = 1700.0
    for side in (-1, 1):  # lungs: dark, with vascular markings
        lung = (((x - side * 0.17) / 0.13) ** 2 + ((y + 0.02) / 0.30) ** 2) < 1
        img[lung] = 700.0 + 90 * np.sin(45 * x[lung]) * np.sin(38 * y[lung])
    heart = (((x - 0.05) / 0.14) ** 2 + ((y - 0.12) / 0.13) ** 2) < 1
    img[heart] = np.maximum(img[heart], 1900.0)
    img[np.abs(x) < 0.035] = np.maximum(img[np.abs(x) < 0.035], 2300.0)  # spine/mediastinum
    for k in range(10):  # posterior ribs: arcs from the spine outwards
        cy = -0.28 + 0.055 * k
        for side in (-1, 1):
            arc = np.abs(y - (cy + 0.5 * (x - side * 0.03) ** 2 * 1.8)) < 0.009
            img[arc & body & (side * x > 0.03) & (side * x < 0.36)] += 450.0
    for side in (-1, 1):  # clavicles
        clav = np.abs(y + 0.30 - 0.25 * np.abs(x)) < 0.012
        img[clav & (side * x > 0.02) & (side * x < 0.28)] += 600.0
    img = _blur(img, max(1, size // 256))
    img += rng.standard_normal((size, size), dtype=np.float32) * 20.0
    return np.clip(img, 0, 4095)


def us_abdomen(rows: int, cols: int, rng: np.random.Generator, variant: int) -> np.ndarray:
    """An 8-bit B-mode sector image: liver speckle, a vessel, gallbladder, kidney outline."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    apex_x, apex_y = cols / 2, -40.0
    r = np.hypot(x - apex_x, y - apex_y)
    theta = np.arctan2(x - apex_x, y - apex_y)
    sector = (np.abs(theta) < 0.62) & (r > 60) & (r < rows * 0.95)
    echo = np.full((rows, cols), 95.0, dtype=np.float32)
    echo[y < 60] = 40.0  # skin and subcutaneous fat
    for cx, cy, a, b, level in (
        (cols * (0.40 + 0.05 * variant % 3), rows * 0.45, 45, 30, 5.0),  # gallbladder
        (cols * 0.62, rows * 0.55, 14, 14, 8.0),  # portal vein
        (cols * 0.55, rows * 0.78, 70, 38, 130.0),  # kidney cortex
        (cols * 0.55, rows * 0.78, 40, 18, 170.0),  # renal sinus fat
    ):
        inside = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1
        echo[inside] = level
    speckle = rng.rayleigh(1.0, (rows, cols)).astype(np.float32)
    img = _blur(echo, 2) * speckle * (1.15 - 0.5 * r / rows)  # depth attenuation
    img[~sector] = 0.0
    return np.asarray(np.clip(img, 0, 255), dtype=np.float32)
