"""Procedural people for the synthetic benchmark: identities (gender, skin, hair), poses of the
actions, a skeleton, a soft-edged canvas that records per-pixel privacy and action masks while it
draws, and one video rendered as a pure function of (seed, index)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ACTIONS = ["WaveOneHand", "WaveBothHands", "Clap", "JumpingJack", "JumpInPlace",
           "WalkAcross", "RunAcross", "BendDown", "Punch", "Kick"]

LIGHT_SKIN = np.array([[236, 200, 170], [225, 185, 150], [245, 210, 185]], np.float32)
DARK_SKIN = np.array([[120, 80, 55], [95, 60, 40], [140, 95, 65]], np.float32)
HAIR = np.array([[30, 25, 20], [80, 50, 25], [200, 170, 90], [120, 40, 20], [60, 60, 60]], np.float32)


@dataclass
class Identity:
    gender: int  # 1: long hair (female cue), 0: short hair, maybe beard
    dark_skin: int
    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    pants: np.ndarray
    beard: bool
    eye_gap: float
    mouth_w: float
    build: float  # body width factor


def make_identities(seed: int, n: int) -> list[Identity]:
    rng = np.random.default_rng([seed, 1])
    out = []
    for i in range(n):
        gender, dark = i % 2, (i // 2) % 2  # balanced attributes across identities
        skin = (DARK_SKIN if dark else LIGHT_SKIN)[rng.integers(3)] + rng.normal(0, 6, 3)
        out.append(Identity(gender, dark, skin, HAIR[rng.integers(len(HAIR))] + rng.normal(0, 8, 3),
                            rng.uniform(20, 235, 3), rng.uniform(20, 160, 3), bool(gender == 0 and rng.random() < 0.5),
                            rng.uniform(0.32, 0.45), rng.uniform(0.3, 0.55), rng.uniform(0.85, 1.2)))
    return out


# ---------------------------------------------------------------------------------------------
# Skeleton and motion. Angles are image-plane directions measured from "straight down",
# positive toward image right. Lengths are in units of figure height.

def _dir(a):
    return np.stack([np.sin(a), np.cos(a)], -1)


def pose(action: int, t: np.ndarray, p: dict) -> dict:
    """Joint angles and root offset for each time t (seconds) of one person."""
    ph = 2 * math.pi * p["freq"] * t + p["phase"]
    s, c = np.sin(ph), np.cos(ph)
    A, d = p["amp"], p["facing"]
    n = len(t)
    z = np.zeros(n)
    wob = 0.05 * np.sin(2 * math.pi * 0.3 * t + p["phase"] * 3)  # idle sway: nobody stands still
    P = dict(lu=-0.15 + wob, ll=-0.1 + wob, ru=0.15 + wob, rl=0.1 + wob,  # arms: upper/lower, left/right
             lt=-0.08 + z, ls=-0.08 + z, rt=0.08 + z, rs=0.08 + z,  # legs: thigh/shin
             torso=z.copy(), dx=z.copy(), dy=z.copy())
    up = math.pi - 0.35
    if action == 0:  # wave one hand
        P["ru"] = up + z; P["rl"] = up + 0.6 * A * s
    elif action == 1:  # wave both hands
        P["ru"] = up + z; P["rl"] = up + 0.6 * A * s
        P["lu"] = -up + z; P["ll"] = -up - 0.6 * A * s
    elif action == 2:  # clap in front of the chest
        o = (1 + s) / 2
        P["ru"] = 0.6 + 0.9 * A * o; P["rl"] = 1.3 - 1.2 * A * o
        P["lu"] = -P["ru"]; P["ll"] = -P["rl"]
    elif action == 3:  # jumping jack
        o = (1 - c) / 2
        P["ru"] = 0.2 + 2.5 * A * o; P["rl"] = P["ru"] + 0.2
        P["lu"] = -P["ru"]; P["ll"] = -P["rl"]
        P["rt"] = 0.08 + 0.35 * A * o; P["rs"] = P["rt"]
        P["lt"] = -P["rt"]; P["ls"] = -P["rs"]
        P["dy"] = -0.05 * A * np.abs(s)
    elif action == 4:  # jump in place
        h = np.abs(s)
        P["dy"] = -0.18 * A * h
        P["rt"] = 0.08 + 0.5 * (1 - h); P["rs"] = P["rt"] - 0.9 * (1 - h)
        P["lt"] = -P["rt"]; P["ls"] = -P["rs"]
        P["ru"] = 0.5 + 1.2 * h; P["lu"] = -P["ru"]; P["rl"] = P["ru"]; P["ll"] = P["lu"]
    elif action in (5, 6):  # walk / run across
        run = action == 6
        sw = (0.75 if run else 0.45) * A * s
        P["lt"] = sw; P["rt"] = -sw
        knee = (0.9 if run else 0.35) * np.clip(-s, 0, 1)
        P["ls"] = sw - d * knee; P["rs"] = -sw - d * (0.9 if run else 0.35) * np.clip(s, 0, 1)
        P["lu"] = -0.7 * sw; P["ru"] = 0.7 * sw; P["ll"] = P["lu"] + d * (1.2 if run else 0.3); P["rl"] = P["ru"] + d * (1.2 if run else 0.3)
        P["torso"] = z + d * (0.25 if run else 0.05)
        P["dx"] = d * p["speed"] * (2.2 if run else 1.0) * (t - t.mean())
        P["dy"] = -0.02 * A * np.abs(s)
    elif action == 7:  # bend down and up
        o = (1 - c) / 2
        P["torso"] = d * 1.3 * A * o
        P["ru"] = P["torso"] + 0.1; P["rl"] = P["ru"]; P["lu"] = P["torso"] - 0.1; P["ll"] = P["lu"]
        P["dy"] = 0.05 * o
    elif action == 8:  # punch: alternate arms extend toward the facing side
        for side, sgn in (("r", 1), ("l", -1)):
            o = np.clip(sgn * s, 0, 1)
            P[side + "u"] = d * (1.2 + 0.35 * o) + z
            P[side + "l"] = P[side + "u"] + d * 1.6 * (1 - o)
    elif action == 9:  # kick with the leg on the facing side
        o = np.clip(s, 0, 1)
        k = "r" if d > 0 else "l"
        P[k + "t"] = d * 1.3 * A * o; P[k + "s"] = P[k + "t"] - d * 0.6 * (1 - o)
        P["ru"] = 0.5 + z; P["lu"] = -0.5 + z; P["rl"] = P["ru"]; P["ll"] = P["lu"]
    return P


def skeleton(P: dict, root: np.ndarray, h: float, build: float) -> dict:
    """Joint positions (n, 2) in pixels from angles: hip root, figure height h."""
    hip = root + np.stack([P["dx"], P["dy"]], -1) * h
    torso_dir = _dir(P["torso"] + math.pi)  # torso points up from the hip
    neck = hip + torso_dir * 0.3 * h
    side = np.stack([np.cos(P["torso"]), -np.sin(P["torso"])], -1)  # across the body
    J = {"hip": hip, "neck": neck, "head": neck + torso_dir * 0.1 * h}
    for k, sgn in (("r", -1), ("l", 1)):  # the person's right is on image left (facing the camera)
        sh = neck + side * sgn * 0.09 * h * build
        J[k + "sh"] = sh
        J[k + "el"] = sh + _dir(P[k + "u"]) * 0.15 * h
        J[k + "wr"] = J[k + "el"] + _dir(P[k + "l"]) * 0.14 * h
        hp = hip + side * sgn * 0.05 * h * build
        J[k + "hp"] = hp
        J[k + "kn"] = hp + _dir(P[k + "t"]) * 0.23 * h
        J[k + "an"] = J[k + "kn"] + _dir(P[k + "s"]) * 0.23 * h
    return J


# ---------------------------------------------------------------------------------------------
# Rasterisation: anti-aliased capsules and discs painted on a crop, with masks updated per layer.

class Canvas:
    def __init__(self, img: np.ndarray):
        self.img = img  # (H, W, 3) float32
        H, W = img.shape[:2]
        self.priv = np.zeros((H, W), bool)
        self.act = np.zeros((H, W), bool)
        self.person = np.zeros((H, W), bool)  # every pixel of a person (the `blacken` baseline's mask)
        self.painting_person = False
        self.yy, self.xx = np.mgrid[0:H, 0:W].astype(np.float32)

    def capsule(self, a, b, r, color, privacy=False, action=False, ry=None):
        H, W = self.img.shape[:2]
        lo = np.floor(np.minimum(a, b) - r - 2).astype(int)
        hi = np.ceil(np.maximum(a, b) + r + 2).astype(int)
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], W), min(hi[1], H)
        if x0 >= x1 or y0 >= y1:
            return
        px, py = self.xx[y0:y1, x0:x1], self.yy[y0:y1, x0:x1]
        d = np.asarray(b, np.float32) - a
        L2 = float(d @ d)
        if ry is not None:  # axis-aligned ellipse centred at a (radii r, ry)
            dist = (np.sqrt(((px - a[0]) / r) ** 2 + ((py - a[1]) / ry) ** 2) - 1) * min(r, ry)
        else:
            u = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / L2, 0, 1) if L2 > 1e-9 else 0.0
            dist = np.hypot(px - a[0] - u * d[0], py - a[1] - u * d[1]) - r
        alpha = np.clip(0.5 - dist, 0, 1)[..., None]
        sl = (slice(y0, y1), slice(x0, x1))
        self.img[sl] = self.img[sl] * (1 - alpha) + np.asarray(color, np.float32) * alpha
        hit = alpha[..., 0] > 0.5
        self.priv[sl][hit] = privacy
        self.act[sl][hit] = action
        self.person[sl][hit] = self.painting_person

    def disc(self, c, r, color, **kw):
        self.capsule(c, c, r, color, **kw)


def draw_person(cv: Canvas, J: dict, h: float, who: Identity, face: bool, nude: bool, moving: dict, facing: int):
    """Paint one person (joints of one frame); ``moving[part]`` says whether that part is in motion."""
    cv.painting_person = True
    lw = max(1.5, 0.035 * h * who.build)
    arm = who.skin if nude else who.shirt
    back, front = ("l", "r") if facing > 0 else ("r", "l")

    def limb(side):
        cv.capsule(J[side + "sh"], J[side + "el"], lw, arm, action=moving[side + "arm"])
        cv.capsule(J[side + "el"], J[side + "wr"], lw * 0.9, arm, action=moving[side + "arm"])
        cv.disc(J[side + "wr"], lw * 1.1, who.skin, action=moving[side + "arm"])

    def leg(side):
        cv.capsule(J[side + "hp"], J[side + "kn"], lw * 1.2, who.pants, action=moving[side + "leg"])
        cv.capsule(J[side + "kn"], J[side + "an"], lw * 1.1, who.pants, action=moving[side + "leg"])
        foot = J[side + "an"] + np.array([facing * lw * 1.2, 0])
        cv.capsule(J[side + "an"], foot, lw * 0.8, (40, 40, 40), action=moving[side + "leg"])

    head_r = 0.075 * h
    hc = J["head"]
    if who.gender:  # long hair falls behind the shoulders
        cv.capsule(hc, hc + np.array([0, 0.17 * h]), head_r * 1.15, who.hair, privacy=True)
    limb(back)
    leg(back)
    cv.capsule(J["neck"], J["hip"], lw * 2.2 * who.build, who.skin if nude else who.shirt, privacy=nude, action=moving["torso"])
    leg(front)
    cv.capsule(J["neck"], hc, lw * 0.8, who.skin, privacy=True)
    pm = dict(privacy=True, action=False)
    if face:
        cv.disc(hc, head_r, who.skin, **pm)
        cv.capsule(hc - np.array([0, head_r * 0.55]), hc - np.array([0, head_r * 0.55]), head_r * 0.95, who.hair, ry=head_r * 0.5, **pm)
        if who.beard:
            cv.capsule(hc + np.array([0, head_r * 0.55]), hc + np.array([0, head_r * 0.55]), head_r * 0.75, who.hair, ry=head_r * 0.45, **pm)
        g = who.eye_gap * head_r
        for sx in (-1, 1):
            e = hc + np.array([sx * g, -0.05 * head_r])
            cv.disc(e, head_r * 0.2, (250, 250, 250), **pm)
            cv.disc(e, head_r * 0.11, (20, 20, 40), **pm)
            cv.capsule(e + np.array([-0.22 * head_r, -0.3 * head_r]), e + np.array([0.22 * head_r, -0.32 * head_r]), head_r * 0.07, who.hair * 0.7, **pm)
        m = hc + np.array([0, 0.45 * head_r])
        cv.capsule(m - np.array([who.mouth_w * head_r, 0]), m + np.array([who.mouth_w * head_r, 0]), head_r * 0.09, (150, 40, 50), **pm)
    else:  # head turned away: the back of the head, all hair
        cv.disc(hc, head_r, who.hair, **pm)
    limb(front)
    cv.painting_person = False


def _motion(J: dict, parts: dict, fps: float, h: float) -> dict:
    """Per part, per frame: does it move relative to the hips faster than a threshold (figure heights/s)?

    Articulated motion is the action's evidence; carrying the whole body across the frame (walking)
    moves the head too, but the head is not what tells walking from running.
    """
    out = {}
    for name, joints in parts.items():
        pts = np.stack([J[j] - J["hip"] for j in joints], 1)  # (n, k, 2)
        v = np.linalg.norm(np.gradient(pts, axis=0), axis=-1).max(1) * fps / h
        v = np.convolve(v, np.ones(5) / 5, mode="same")  # smooth so masks do not flicker
        out[name] = v > 0.25
    return out


# Body parts whose motion counts as action; the head never does (it is where privacy lives).
PARTS = {"rarm": ["rel", "rwr"], "larm": ["lel", "lwr"], "rleg": ["rkn", "ran"], "lleg": ["lkn", "lan"],
         "torso": ["neck"]}


def render_video(seed: int, index: int, identities: list[Identity], size: int, frames: int, fps: float,
                 action: int | None = None) -> dict:
    """Render one video: frames (F, S, S, 3) uint8, masks, labels."""
    rng = np.random.default_rng([seed, 2, index])
    action = int(rng.integers(len(ACTIONS))) if action is None else action
    ident_id = int(rng.integers(len(identities)))
    who = identities[ident_id]
    face, nude, rel = int(rng.random() < 0.6), int(rng.random() < 0.35), int(rng.random() < 0.35)
    S, n = size, frames
    t = np.arange(n) / fps
    # background: gradient + smooth texture, shifted by camera shake; moving clutter
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    pad = 8
    g = np.linspace(0, 1, S + 2 * pad, dtype=np.float32)[:, None, None]
    coarse = rng.normal(0, 1, (7, 7, 3)).astype(np.float32)
    ax = np.linspace(0, 6, S + 2 * pad)
    i0 = np.minimum(ax.astype(int), 5)
    fr = (ax - i0)[:, None]
    rows = coarse[i0] * (1 - fr[..., None]) + coarse[i0 + 1] * fr[..., None]  # bilinear upsampling, rows then columns
    tex = rows[:, i0] * (1 - fr[None]) + rows[:, i0 + 1] * fr[None]
    bg = (c0 * (1 - g) + c1 * g + tex * rng.uniform(5, 25)).astype(np.float32)
    shake = np.cumsum(rng.normal(0, 0.6, (n, 2)), 0)
    shake = np.clip(shake - shake.mean(0), -pad, pad).round().astype(int)
    zoom = 1 + rng.uniform(0, 0.12) * np.sin(2 * math.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6))
    clutter = [(rng.uniform(0, S, 2), rng.normal(0, 0.4, 2), rng.uniform(3, max(3, S / 8)), rng.uniform(0, 255, 3)) for _ in range(rng.integers(2, 6))]
    light = 1 + rng.uniform(0, 0.15) * np.sin(2 * math.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6))
    noise = rng.uniform(1, 5)

    def person(p_who, act, x, h, facing, prng):
        params = dict(freq=prng.uniform(0.6, 1.4) * (1.6 if act == 6 else 1), phase=prng.uniform(0, 2 * math.pi),
                      amp=prng.uniform(0.75, 1.1), facing=facing, speed=prng.uniform(0.25, 0.4))
        P = pose(act, t, params)
        root = np.array([x, S * 0.5 + h * 0.1 + prng.uniform(-0.05, 0.05) * S])
        J = skeleton(P, root, h, p_who.build)
        return J, _motion(J, PARTS, fps, h), facing

    h = S * rng.uniform(0.5, 0.8)
    facing = int(rng.choice([-1, 1]))
    x = S * rng.uniform(0.3, 0.7)
    people = [(who, face, nude) + person(who, action, x, h, facing, rng)]
    if rel:  # a second person, facing the first, close by: a relationship is visible
        other = identities[int(rng.integers(len(identities)))]
        x2 = x - facing * h * rng.uniform(0.35, 0.5)
        people.insert(0, (other, int(rng.random() < 0.6), int(rng.random() < 0.3)) + person(other, -1, x2, h * rng.uniform(0.85, 1.05), -facing, rng))
    video = np.empty((n, S, S, 3), np.uint8)
    priv = np.empty((n, S, S), bool)
    act = np.empty((n, S, S), bool)
    body = np.empty((n, S, S), bool)
    centre = np.array([S / 2, S / 2])
    for f in range(n):
        sx, sy = shake[f]
        cv = Canvas(bg[pad + sy: pad + sy + S, pad + sx: pad + sx + S].copy())
        cam = lambda p: (p - centre) * zoom[f] + centre + shake[f]  # noqa: E731
        for c, v, r, col in clutter:
            cv.disc(cam(c + v * f), r * zoom[f], col)
        for p_who, p_face, p_nude, J, moving, p_facing in people:
            Jf = {k: cam(v[f]) for k, v in J.items()}
            draw_person(cv, Jf, h * zoom[f], p_who, p_face, p_nude, {k: bool(v[f]) for k, v in moving.items()}, p_facing)
        img = cv.img * light[f] + rng.normal(0, noise, cv.img.shape).astype(np.float32)
        video[f] = np.clip(img, 0, 255).astype(np.uint8)
        priv[f], act[f], body[f] = cv.priv, cv.act, cv.person
    return {"video": video, "privacy": priv, "action": act, "person": body, "action_id": action, "identity": ident_id,
            "attributes": [face, who.dark_skin, who.gender, nude, rel], "crf": int(rng.integers(18, 29))}
