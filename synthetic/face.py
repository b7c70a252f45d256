"""Draws one face in a canonical 256x320 patch: a pre-shaded texture per subject and lighting,
and on top of it, per frame, the features that action units move (FACS appearance changes).

Coordinates are canonical-patch pixels; drawing uses cv2's fixed-point `shift` so that
sub-pixel motion is smooth. Intensities are FACS-like 0-5; `a = intensity / 5` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from synthetic.dynamics import AU_INDEX
from synthetic.identity import Identity

PATCH_W, PATCH_H = 256, 320
CX, CY = 128.0, 150.0  # head centre in the patch
HEAD_A, HEAD_B = 84.0, 108.0  # head half-width / half-height before identity scaling
SHIFT = 4
ONE = 1 << SHIFT


def _fp(points: np.ndarray) -> np.ndarray:
    """Float points -> cv2 fixed-point int32 (for the `shift` argument)."""
    return np.round(np.asarray(points, np.float64) * ONE).astype(np.int32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * ONE), round(y * ONE)


@dataclass(frozen=True)
class Geometry:
    """Resting feature positions of one identity in the patch."""

    a: float
    b: float
    eye_y: float
    eye_dx: float
    eye_w: float
    brow_y: float
    nose_y: float
    mouth_y: float
    mouth_w: float
    chin_y: float


def geometry(idt: Identity) -> Geometry:
    a, b = HEAD_A * idt.face_w, HEAD_B * idt.face_h
    eye_y = CY - 0.12 * b
    return Geometry(
        a=a,
        b=b,
        eye_y=eye_y,
        eye_dx=0.40 * a * idt.eye_spacing,
        eye_w=14.0 * idt.eye_size,
        brow_y=eye_y - 17.0 * idt.brow_height,
        nose_y=eye_y + 40.0 * idt.nose_length,
        mouth_y=eye_y + 40.0 * idt.nose_length + 27.0,
        mouth_w=24.0 * idt.mouth_width,
        chin_y=CY + 0.93 * b,
    )


@lru_cache(maxsize=128)  # FER sets reuse people and light directions; callers copy, never write
def texture(idt: Identity, light: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Shaded head, hair, neck and fixed attributes (beard) as BGR uint8 plus a 0/255 mask.

    `light` = (horizontal, vertical) direction of the key light in [-1, 1]. Built once per
    subject and sequence; the per-frame work is only the moving features.
    """
    g = geometry(idt)
    yy, xx = np.mgrid[0:PATCH_H, 0:PATCH_W].astype(np.float32)
    nx, ny = (xx - CX) / g.a, (yy - CY) / g.b
    r2 = nx**2 + ny**2
    # Rounded-surface shading: darker towards the silhouette, lit from `light`.
    shade = 1.0 - 0.38 * np.clip(r2, 0, 1) ** 1.6 + 0.18 * (light[0] * nx + light[1] * ny)

    def blob(x: float, y: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-(((xx - x) / sx) ** 2 + ((yy - y) / sy) ** 2))

    for side in (-1, 1):  # eye sockets and the shadow under the brow ridge
        shade -= 0.22 * blob(CX + side * g.eye_dx, g.eye_y - 2, 20, 13)
        shade += 0.06 * blob(CX + side * 0.5 * g.a, g.nose_y + 4, 22, 16)  # cheekbones
    shade += 0.10 * blob(CX, (g.eye_y + g.nose_y) / 2, 7, 26)  # nose bridge highlight
    shade -= 0.12 * blob(CX, g.nose_y + 7, 12, 4)  # under the nose
    shade -= 0.10 * blob(CX, g.chin_y - 0.18 * g.b, 26, 6)  # below the lower lip

    skin = np.array(idt.skin, np.float32)
    img = np.zeros((PATCH_H, PATCH_W, 3), np.float32)
    mask = np.zeros((PATCH_H, PATCH_W), np.uint8)
    hair = np.array(idt.hair, np.float32)
    if idt.hair_style == 1:  # long hair behind the head and shoulders
        cv2.ellipse(
            img,
            _pt(CX, CY + 20),
            (int(g.a * 1.25 * ONE), int(g.b * 1.25 * ONE)),
            0,
            0,
            360,
            hair.tolist(),
            -1,
            cv2.LINE_AA,
            SHIFT,
        )
        cv2.ellipse(
            mask,
            _pt(CX, CY + 20),
            (int(g.a * 1.25 * ONE), int(g.b * 1.25 * ONE)),
            0,
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
            SHIFT,
        )
    neck = np.array(
        [
            [CX - 0.48 * g.a, CY + 0.6 * g.b],
            [CX + 0.48 * g.a, CY + 0.6 * g.b],
            [CX + 0.6 * g.a, PATCH_H],
            [CX - 0.6 * g.a, PATCH_H],
        ]
    )
    cv2.fillPoly(img, [_fp(neck)], (skin * 0.72).tolist(), cv2.LINE_AA, SHIFT)
    cv2.fillPoly(mask, [_fp(neck)], 255, cv2.LINE_AA, SHIFT)
    for side in (-1, 1):  # ears
        ear = (CX + side * g.a * 0.98, g.eye_y + 14)
        cv2.ellipse(
            img,
            _pt(*ear),
            (9 * ONE, 19 * ONE),
            0,
            0,
            360,
            (skin * 0.8).tolist(),
            -1,
            cv2.LINE_AA,
            SHIFT,
        )
        cv2.ellipse(mask, _pt(*ear), (9 * ONE, 19 * ONE), 0, 0, 360, 255, -1, cv2.LINE_AA, SHIFT)
    head = r2 <= 1.0
    img[head] = shade[head, None] * skin[None, :]
    mask[head] = 255
    if idt.beard:  # darker, hair-tinted jaw and chin; the mouth is drawn over it per frame
        beard = (r2 <= 1.0) & (yy > g.nose_y + 10) & (np.abs(nx) < 0.95)
        weight = np.clip((yy - g.nose_y - 10) / 25.0, 0, 1)[beard, None] * 0.75
        img[beard] = img[beard] * (1 - weight) + hair * 0.8 * weight
    _hair_top(img, mask, idt, g)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _hair_top(img: np.ndarray, mask: np.ndarray, idt: Identity, g: Geometry) -> None:
    color = list(idt.hair)
    line = {0: 0.62, 1: 0.58, 2: 0.78, 3: 0.4}[idt.hair_style]  # hairline, fraction of b above CY
    # The hair cap: the top of the head ellipse above the hairline, a little larger than it.
    cap = cv2.ellipse2Poly((int(CX), int(CY)), (int(g.a * 1.06), int(g.b * 1.07)), 0, 180, 360, 4)
    cap = cap[cap[:, 1] <= CY - line * g.b + 14]
    if len(cap) >= 3:
        hairline = np.array(
            [
                [CX + g.a * 0.9, CY - line * g.b + 10],
                [CX, CY - line * g.b],
                [CX - g.a * 0.9, CY - line * g.b + 10],
            ]
        )
        poly = np.concatenate([cap.astype(np.float64), hairline])
        cv2.fillPoly(img, [_fp(poly)], color, cv2.LINE_AA, SHIFT)
        cv2.fillPoly(mask, [_fp(poly)], 255, cv2.LINE_AA, SHIFT)


def draw_features(
    img: np.ndarray, idt: Identity, au: np.ndarray, yaw: float, blink: float, gaze: float
) -> np.ndarray:
    """Draw brows, eyes, nose, mouth and wrinkles for AU intensities `au` onto the texture.

    `yaw` in [-1, 1] shifts features sideways (a cheap turn of the head); `blink` in [0, 1]
    closes the lids. Returns the two eye centres (for alignment truth) as [2, 2].
    """
    g = geometry(idt)
    a = {k: float(au[i]) / 5.0 for k, i in AU_INDEX.items()}
    skin = np.array(idt.skin, np.float32)

    def dark(amount: float) -> list[float]:
        return (skin * (1.0 - amount)).tolist()

    shift = yaw * 0.22 * g.a  # features closer to the viewer move further
    eyes = []
    for side in (-1, 1):
        ex = CX + side * g.eye_dx + shift * 0.9
        eyes.append((ex, g.eye_y))
        _brow(img, idt, g, side, ex, a)
        _eye(img, idt, g, side, ex, a, blink, gaze, dark)
    _nose(img, g, shift, a, dark)
    _mouth(img, idt, g, shift, a, dark)
    if idt.glasses:
        for ex, ey in eyes:
            cv2.rectangle(
                img,
                _pt(ex - 21, ey - 13),
                _pt(ex + 21, ey + 14),
                (35, 35, 35),
                2,
                cv2.LINE_AA,
                SHIFT,
            )
        cv2.line(
            img,
            _pt(eyes[0][0] + 21, eyes[0][1] - 4),
            _pt(eyes[1][0] - 21, eyes[1][1] - 4),
            (35, 35, 35),
            2,
            cv2.LINE_AA,
            SHIFT,
        )
    return np.array(eyes, np.float32)


_T6 = np.linspace(0.0, 1.0, 6)
_T9 = np.linspace(0.0, 1.0, 9)
_SIN9 = np.sin(np.pi * _T9)
_T11 = np.linspace(0.0, 1.0, 11)
_SIN11 = np.sin(np.pi * _T11)
_BOW11 = (_SIN11**0.7) * (1 - 0.35 * np.exp(-(((_T11 - 0.5) / 0.08) ** 2)))  # cupid's bow dip
_CORNER11 = (np.abs(_T11 - 0.5) * 2) ** 2


def _brow(img: np.ndarray, idt: Identity, g: Geometry, side: int, ex: float, a: dict) -> None:
    t = _T6  # 0 = inner end, 1 = outer end
    xs = ex - side * 16 + side * t * 36 - side * 5 * a[4]
    arch = -5.0 * np.sin(np.pi * (0.15 + 0.7 * t))
    raise_ = 13 * a[1] * (1 - t) ** 1.3 + 12 * a[2] * t**1.2
    ys = g.brow_y + arch - raise_ + 8 * a[4] * (1 - 0.5 * t) + 2.0 * a[9]
    pts = np.stack([xs, ys], 1)
    color = (np.array(idt.hair) * 0.8).tolist()
    cv2.polylines(
        img, [_fp(pts)], False, color, max(2, int(idt.brow_thickness)), cv2.LINE_AA, SHIFT
    )
    if a[4] > 0.05:  # vertical furrows between the brows
        fx = CX + side * 4
        cv2.line(
            img,
            _pt(fx, g.brow_y - 3),
            _pt(fx, g.brow_y + 11),
            (np.array(idt.skin) * (1 - 0.5 * a[4])).tolist(),
            2,
            cv2.LINE_AA,
            SHIFT,
        )
    if a[1] + a[2] > 0.3:  # horizontal forehead lines
        for k in range(2):
            y = g.brow_y - 18 - 7 * k
            cv2.line(
                img,
                _pt(ex - 14, y),
                _pt(ex + 14, y),
                (np.array(idt.skin) * (1 - 0.25 * min(1.0, a[1] + a[2]))).tolist(),
                1,
                cv2.LINE_AA,
                SHIFT,
            )


def _eye(img, idt, g, side, ex, a, blink, gaze, dark) -> None:  # type: ignore[no-untyped-def]
    ey, w = g.eye_y, g.eye_w
    open_ = 1.0 - blink
    upper = (7.0 * idt.eye_size + 6 * a[5] - 4.0 * a[7] - 1.5 * a[6]) * open_
    lower = (4.5 * idt.eye_size - 3.5 * a[7] - 3.0 * a[6]) * open_
    upper, lower = max(upper, 0.4), max(lower, 0.3)
    t = _T9
    xs = ex - w + 2 * w * t
    top = np.stack([xs, ey - upper * _SIN9], 1)
    bot = np.stack([xs[::-1], ey + lower * _SIN9[::-1]], 1)
    cv2.fillPoly(img, [_fp(np.concatenate([top, bot]))], (225, 228, 232), cv2.LINE_AA, SHIFT)
    # Iris: drawn whole, then the lids cover what lies outside the opening.
    r = 0.52 * w
    cv2.circle(img, _pt(ex + gaze * 4, ey), int(r * ONE), idt.iris, -1, cv2.LINE_AA, SHIFT)
    cv2.circle(
        img, _pt(ex + gaze * 4, ey), int(0.45 * r * ONE), (10, 10, 10), -1, cv2.LINE_AA, SHIFT
    )
    lid = dark(0.18)
    above = np.concatenate([top, [[ex + w + 1, ey - r - 3], [ex - w - 1, ey - r - 3]]])
    below = np.concatenate([bot, [[ex - w - 1, ey + r + 3], [ex + w + 1, ey + r + 3]]])
    cv2.fillPoly(img, [_fp(above)], lid, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(img, [_fp(below)], dark(0.12), cv2.LINE_AA, SHIFT)
    cv2.polylines(img, [_fp(top)], False, (25, 25, 30), 2, cv2.LINE_AA, SHIFT)
    cv2.polylines(img, [_fp(bot)], False, dark(0.45), 1, cv2.LINE_AA, SHIFT)
    if a[6] > 0.05:  # crow's feet at the outer corner; cheek raised under the eye
        ox = ex + side * (w + 3)
        for k in (-1, 0, 1):
            cv2.line(
                img,
                _pt(ox, ey + 1 + 3 * k),
                _pt(ox + side * 9, ey + 5 * k),
                dark(0.4 * a[6]),
                1,
                cv2.LINE_AA,
                SHIFT,
            )
        cv2.ellipse(
            img,
            _pt(ex, ey + 11 - 3 * a[6]),
            (int(w * ONE), int(4 * ONE)),
            0,
            20,
            160,
            dark(0.35 * a[6]),
            1,
            cv2.LINE_AA,
            SHIFT,
        )
    if a[7] > 0.05:  # tightened lower lid
        cv2.polylines(img, [_fp(bot + [0, 1.5])], False, dark(0.4 * a[7]), 2, cv2.LINE_AA, SHIFT)


def _nose(img, g, shift, a, dark) -> None:  # type: ignore[no-untyped-def]
    nx = CX + shift * 1.3
    ny = g.nose_y - 3.5 * a[9] - 1.5 * a[10]
    flare = 1 + 0.3 * a[9]
    for side in (-1, 1):
        cv2.ellipse(
            img,
            _pt(nx + side * 7 * flare, ny),
            (int(4 * flare * ONE), int(2.5 * ONE)),
            side * 20,
            0,
            360,
            dark(0.55),
            -1,
            cv2.LINE_AA,
            SHIFT,
        )
        cv2.ellipse(
            img,
            _pt(nx + side * 11 * flare, ny - 4),
            (int(5 * ONE), int(8 * ONE)),
            0,
            side * 90 - 90 if side > 0 else 180,
            side * 90 + 90 if side > 0 else 360,
            dark(0.3),
            1,
            cv2.LINE_AA,
            SHIFT,
        )
    cv2.line(img, _pt(nx - 5, g.eye_y + 6), _pt(nx - 6, ny - 6), dark(0.2), 1, cv2.LINE_AA, SHIFT)
    if a[9] > 0.05:  # wrinkles across the bridge
        for k in range(3):
            y = g.eye_y + 6 + 5 * k
            cv2.ellipse(
                img,
                _pt(nx, y),
                (int(7 * ONE), int(2 * ONE)),
                0,
                200,
                340,
                dark(0.45 * a[9]),
                1,
                cv2.LINE_AA,
                SHIFT,
            )
    fold = max(a[9], a[10], 0.6 * a[6], 0.5 * a[12])
    if fold > 0.05:  # nasolabial folds deepen
        for side in (-1, 1):
            cv2.line(
                img,
                _pt(nx + side * 13, ny - 2),
                _pt(CX + shift + side * (g.mouth_w + 6), g.mouth_y + 4),
                dark(0.4 * fold),
                2,
                cv2.LINE_AA,
                SHIFT,
            )


def _mouth(img, idt, g, shift, a, dark) -> None:  # type: ignore[no-untyped-def]
    mx, my = CX + shift * 1.1, g.mouth_y
    half = g.mouth_w * (1 + 0.22 * a[12] + 0.35 * a[20] - 0.18 * a[23] - 0.08 * a[14])
    lift = 9 * a[12] - 10 * a[15] - 2 * a[20]
    lift_r = lift + 4 * a[14] if a[12] < 0.05 else lift  # contempt-like: one-sided corner
    gap = 0.5 + 5 * a[25] + 14 * a[26] - 2.5 * a[24] - 1.5 * a[17]
    gap = max(gap, 0.0)
    thin = 1 - 0.65 * max(a[23], a[24])
    up_th = 6.0 * idt.lip_thickness * thin
    lo_th = (7.5 * idt.lip_thickness + 3 * a[17]) * thin
    raise_up = 6 * a[10] - 3 * a[17]
    t = _T11
    xs = mx - half + 2 * half * t
    sin = _SIN11
    corner_lift = np.where(t < 0.5, lift, lift_r) * _CORNER11
    line_y = my - corner_lift - raise_up * sin * 0.4
    upper_in = np.stack([xs, line_y - gap * 0.35 * sin], 1)
    lower_in = np.stack([xs, line_y + gap * 0.65 * sin], 1)
    upper_out = np.stack([xs, upper_in[:, 1] - up_th * _BOW11 - raise_up * sin * 0.6], 1)
    lower_out = np.stack([xs, lower_in[:, 1] + lo_th * sin**0.8], 1)
    lip = (np.array(idt.skin) * np.array([0.75, 0.62, 0.95])).tolist()
    if gap > 0.6:  # open mouth: dark interior, teeth when the lips part
        inner = np.concatenate([upper_in, lower_in[::-1]])
        cv2.fillPoly(img, [_fp(inner)], (30, 25, 45), cv2.LINE_AA, SHIFT)
        teeth = np.concatenate([upper_in, (upper_in + [0, min(gap * 0.4, 4)])[::-1]])
        cv2.fillPoly(img, [_fp(teeth)], (215, 222, 228), cv2.LINE_AA, SHIFT)
    cv2.fillPoly(img, [_fp(np.concatenate([upper_out, upper_in[::-1]]))], lip, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(img, [_fp(np.concatenate([lower_in, lower_out[::-1]]))], lip, cv2.LINE_AA, SHIFT)
    seam = 1 + int(2 * a[24])
    cv2.polylines(img, [_fp(upper_in)], False, dark(0.55 + 0.2 * a[24]), seam, cv2.LINE_AA, SHIFT)
    if a[14] > 0.05:  # dimples beside the corners
        for side in (-1, 1):
            if side < 0 and a[12] < 0.05:
                continue  # one-sided when not smiling
            cv2.ellipse(
                img,
                _pt(mx + side * (half + 5), my - corner_lift[-1] - 1),
                (3 * ONE, 7 * ONE),
                0,
                0,
                360,
                dark(0.6 * a[14]),
                -1,
                cv2.LINE_AA,
                SHIFT,
            )
    chin_y = g.chin_y - 0.15 * g.b + 10 * a[26] - 3 * a[17]
    cv2.ellipse(
        img,
        _pt(mx, chin_y),
        (int((12 + 6 * a[17]) * ONE), int((4 + 3 * a[17]) * ONE)),
        0,
        200,
        340,
        dark(0.2 + 0.45 * a[17]),
        1 + int(a[17] > 0.3),
        cv2.LINE_AA,
        SHIFT,
    )
    if a[24] > 0.05:  # bulge below the pressed lips
        cv2.ellipse(
            img,
            _pt(mx, lower_out[5, 1] + 4),
            (int(half * 0.7 * ONE), 4 * ONE),
            0,
            0,
            180,
            dark(0.45 * a[24]),
            2,
            cv2.LINE_AA,
            SHIFT,
        )
