"""Procedural driving-like video with exact labels and optical flow, deterministic by seed.

The scene is a straight street ray-cast per pixel: a ground plane (road with lane markings,
parking strips, pavements), building facades on both sides as two vertical planes with blocks of
varying height, the sky at infinity, and axis-aligned boxes for poles, parked cars, a car ahead,
oncoming cars and pedestrians (walking along the pavements, a few crossing the road out of the
buildings). The camera drives along the road with varying speed, sways laterally, yaws and pitches.
Every position is a closed-form function of time, so any frame can be rendered on its own and a
clip can start anywhere.

Because each pixel knows the 3D point it shows and how that point moves, the ground-truth flow is
exact: the point is moved to the next frame's time and projected with the next frame's camera.
``flow_valid`` marks the pixels whose point is still visible there (inside the image and not
occluded). Appearance (textures, haze, blur, noise, dropouts) never changes labels or flow.

Sensor faults give a temporal model something to gain over a single frame: each frame has a
small chance to start a dropout of 1..``max_dropout_frames`` frames that are black, drowned in
noise, or partly covered by a dark blob; their labels still show the true scene.

Classes (label value: name, CamVid colour; ``SYNTHETIC_TO_CAMVID`` maps values to CamVid ids):
0 sky, 1 building, 2 pole, 3 road (incl. lane markings and parking strips), 4 pavement, 5 car,
6 pedestrian. There is no void: every pixel is labelled; 255 is the ignore value that
augmentation uses outside the image.

Coordinates: world x right, y up, z along the road (metres); camera x right, y up, z forward;
pixel (u, v) with pixel centres at integers, u right, v down. Flow is in pixels, (du, dv).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from torch.utils.data import Dataset

from vseg_core.data.clips import ClipAugmentation, KeyframeOffset, augmented_clip_sample, check_keyframe_offset
from vseg_core.palette import CAMVID, ClassPalette

__all__ = [
    "SYNTHETIC",
    "SYNTHETIC_TO_CAMVID",
    "SyntheticClip",
    "SyntheticScene",
    "SyntheticVideoConfig",
    "SyntheticVideoDataset",
    "generate_video",
]

SKY, BUILDING, POLE, ROAD, PAVEMENT, CAR, PEDESTRIAN = range(7)
IGNORE_INDEX = 255

#: CamVid ids of the synthetic classes, so that a model trained here can start a CamVid training.
SYNTHETIC_TO_CAMVID = (0, 1, 2, 3, 4, 8, 9)

SYNTHETIC = ClassPalette(
    names=tuple(CAMVID.names[i] for i in SYNTHETIC_TO_CAMVID),
    colors=tuple(CAMVID.colors[i] for i in SYNTHETIC_TO_CAMVID),
    ignore_index=IGNORE_INDEX,
)

# Street cross-section (metres from the road's centre line): lanes to 3.5, a parking strip to
# 5.0 (still road), pavement to the facades at 8.0.
_LANE_CENTRE = 1.75
_ROAD_HALF_WIDTH = 5.0
_FACADE_X = 8.0
_BLOCK_LENGTH = 15.0
_POLE_SPACING = 18.0
_PARKING_SPACING = 6.5
_VIEW_BEHIND, _VIEW_AHEAD = 12.0, 120.0  # window of moving objects around the camera (z, metres)

# Box kinds: they choose the texture; several boxes make one object.
_K_POLE, _K_CAR_BODY, _K_CAR_CABIN, _K_LEGS, _K_TORSO, _K_HEAD = range(6)
# Primitive ids in the per-pixel id map; boxes follow from _P_BOX on.
_P_SKY, _P_GROUND, _P_FACADE_LEFT, _P_FACADE_RIGHT, _P_BOX = -1, 0, 1, 2, 3


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """How the synthetic street looks and moves. Sizes in pixels, distances in metres, speeds in m/s.

    ego_speed: range of the camera's mean speed, drawn per scene.
    noise_std: sensor noise standard deviation in 0..255 units.
    dropout_probability: chance per frame that a dropout starts (0 disables dropouts).
    """

    height: int = 256
    width: int = 512
    fps: float = 15.0
    horizontal_fov_deg: float = 75.0
    camera_height: float = 1.5
    ego_speed: tuple[float, float] = (6.0, 12.0)
    leading_car_probability: float = 0.7
    num_oncoming_cars: int = 4
    parked_car_probability: float = 0.45
    num_pedestrians: int = 10
    num_crossing_pedestrians: int = 1
    camera_shake_deg: float = 0.3
    blur_sigma: float = 0.6
    noise_std: float = 3.0
    dropout_probability: float = 0.03
    max_dropout_frames: int = 3

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"frames must be at least 8x8 pixels, got {self.height}x{self.width}")
        if self.fps <= 0 or not 10.0 <= self.horizontal_fov_deg <= 150.0:
            raise ValueError(f"need fps > 0 and a field of view in [10, 150] degrees, got {self}")
        if not 0 < self.ego_speed[0] <= self.ego_speed[1]:
            raise ValueError(f"ego_speed must be (low, high) with 0 < low <= high, got {self.ego_speed}")
        for name in ("leading_car_probability", "parked_car_probability", "dropout_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if min(self.num_oncoming_cars, self.num_pedestrians, self.num_crossing_pedestrians) < 0:
            raise ValueError("object counts cannot be negative")
        if self.max_dropout_frames < 1 or self.noise_std < 0 or self.blur_sigma < 0:
            raise ValueError("need max_dropout_frames >= 1, noise_std >= 0 and blur_sigma >= 0")


@dataclass(frozen=True)
class SyntheticClip:
    """Rendered frames with ground truth.

    frames: (T, H, W, 3) uint8 RGB as the sensor delivered them (dropouts included).
    labels: (T, H, W) uint8 class ids of the true scene.
    flow: (T-1, H, W, 2) float32, flow[t] maps frame t's pixels to frame t+1 (pixels, du, dv).
    flow_valid: (T-1, H, W) bool, the point is inside frame t+1 and not occluded there.
    dropped: (T,) bool, the frame is a sensor dropout.
    """

    frames: np.ndarray
    labels: np.ndarray
    flow: np.ndarray
    flow_valid: np.ndarray
    dropped: np.ndarray
    palette: ClassPalette = field(default=SYNTHETIC)


@dataclass(frozen=True)
class _Geometry:
    """One frame's ray-cast: what each pixel shows and where that point is."""

    depth: np.ndarray  # (H, W) camera z in metres, inf for sky
    prim: np.ndarray  # (H, W) int32 primitive id (_P_* or _P_BOX + box index)
    points: np.ndarray  # (H, W, 3) world point, or the ray direction for sky
    labels: np.ndarray  # (H, W) uint8
    box_motion_ids: np.ndarray  # (N_boxes,) index of the moving object slot, -1 for static boxes


def _hash(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) from integer keys (arrays broadcast); a fixed integer mix."""
    h = np.uint64(0x9E3779B97F4A7C15)
    # Wrap-around is the point of the mix; numpy warns about it on scalars only.
    with np.errstate(over="ignore"):
        for i, key in enumerate(keys):
            k = np.asarray(key, dtype=np.int64).view(np.uint64) if np.ndim(key) else np.uint64(int(key) & (2**64 - 1))
            h = (h ^ (k + np.uint64(0x632BE59BD9B4E019 + i))) * np.uint64(0xBF58476D1CE4E5B9)
            h = h ^ (h >> np.uint64(29))
        h = (h * np.uint64(0x94D049BB133111EB)) ^ (h >> np.uint64(32))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


_TABLE = 256  # side of the random lattice behind every texture; patterns repeat after 256 cells


def _lattice_noise(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear value noise in [0, 1) with unit lattice spacing, sampled at 1-D float arrays x, y.

    cv2.remap interpolates the periodic random table in C, which is what keeps a frame's textures
    to a few milliseconds.
    """
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    n = x.size
    rows = -(-n // 512)  # remap wants maps below 32767 on each side
    maps = np.zeros((2, rows * 512), dtype=np.float32)
    maps[0, :n] = np.mod(x, _TABLE)
    maps[1, :n] = np.mod(y, _TABLE)
    out = cv2.remap(
        table, maps[0].reshape(rows, 512), maps[1].reshape(rows, 512), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
    )
    return out.ravel()[:n]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation: roll about z, then pitch about x (positive looks up), then yaw about y."""
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_yaw @ r_pitch @ r_roll


def _rotate(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors @ matrix.T`` for (..., 3) float32 arrays, written out per component: a BLAS
    matmul with an inner size of 3 is slower than this and wakes up every BLAS thread."""
    m = matrix.astype(np.float32)
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    out = np.empty(vectors.shape, dtype=np.float32)
    for row in range(3):
        out[..., row] = m[row, 0] * x + m[row, 1] * y + m[row, 2] * z
    return out


class SyntheticScene:
    """One street, drawn from ``seed``; ``clip(start, n)`` renders any n consecutive frames.

    Frame k shows time k / fps. Two scenes with the same config and seed render identical frames.
    """

    def __init__(self, config: SyntheticVideoConfig = SyntheticVideoConfig(), seed: int = 0) -> None:
        self.config = config
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 0x5EED])
        c = config
        self.focal = (c.width / 2) / math.tan(math.radians(c.horizontal_fov_deg) / 2)
        self.cx, self.cy = (c.width - 1) / 2, (c.height - 1) / 2
        u = np.arange(c.width, dtype=np.float64)
        v = np.arange(c.height, dtype=np.float64)
        uu, vv = np.meshgrid(u, v)
        self._pixels = np.stack([uu, vv], axis=-1)
        rays = np.stack([(uu - self.cx) / self.focal, -(vv - self.cy) / self.focal, np.ones_like(uu)], -1)
        self._rays = rays.astype(np.float32)

        # Ego motion: speed v(t) = v0 + a sin(w t + phi) integrates in closed form.
        self._v0 = rng.uniform(*c.ego_speed)
        self._speed_amp = rng.uniform(0.0, 0.25) * self._v0
        self._speed_w, self._speed_phase = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi)
        self._sway = (rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.5), rng.uniform(0, 2 * np.pi))
        self._yaw = (math.radians(rng.uniform(0.5, 3.0)), rng.uniform(0.1, 0.4), rng.uniform(0, 2 * np.pi))
        shake = math.radians(c.camera_shake_deg)
        self._shake = [(shake * rng.uniform(0.3, 1.0), rng.uniform(5, 15), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
        self._pitch0 = math.radians(rng.uniform(-3.0, 0.0))
        self._z0 = rng.uniform(0, 1000)  # where along the (infinite) street the scene starts

        # Moving objects. Each is a list of (kind, local min, local max, colour) boxes plus a
        # closed-form position of its anchor; a slot index stays with its object for all time.
        self._movers: list[dict] = []
        if rng.random() < c.leading_car_probability:
            self._movers.append(
                {
                    "kind": "leading",
                    "boxes": self._car_boxes(rng),
                    "x": _LANE_CENTRE,
                    "dist": (rng.uniform(14, 30), rng.uniform(3, 8), rng.uniform(0.1, 0.4), rng.uniform(0, 2 * np.pi)),
                }
            )
        for _ in range(c.num_oncoming_cars):
            self._movers.append(
                {
                    "kind": "along",
                    "boxes": self._car_boxes(rng),
                    "x": -_LANE_CENTRE + rng.uniform(-0.3, 0.3),
                    "z": rng.uniform(0, _VIEW_AHEAD + _VIEW_BEHIND),
                    "speed": -rng.uniform(6, 14),
                }
            )
        for _ in range(c.num_pedestrians):
            side = rng.choice([-1.0, 1.0])
            self._movers.append(
                {
                    "kind": "along",
                    "boxes": self._pedestrian_boxes(rng),
                    "x": side * rng.uniform(_ROAD_HALF_WIDTH + 0.6, _FACADE_X - 0.5),
                    "z": rng.uniform(0, _VIEW_AHEAD + _VIEW_BEHIND),
                    "speed": rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.7),
                }
            )
        for _ in range(c.num_crossing_pedestrians):
            # They walk out of one facade, across the road and into the other: the facades hide
            # the moment they wrap around.
            self._movers.append(
                {
                    "kind": "crossing",
                    "boxes": self._pedestrian_boxes(rng),
                    "x": rng.uniform(-_FACADE_X, _FACADE_X),
                    "z": rng.uniform(0, _VIEW_AHEAD + _VIEW_BEHIND),
                    "speed": rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.8),
                }
            )
        self._sky_color = np.array([rng.uniform(70, 110), rng.uniform(120, 160), rng.uniform(190, 235)], np.float32)
        self._haze = np.array([190.0, 195.0, 205.0], np.float32) * np.float32(rng.uniform(0.85, 1.05))
        # Random tables that textures and building blocks look up (periodic, far beyond a clip).
        self._noise_table = rng.random((_TABLE, _TABLE), dtype=np.float32)
        self._glass_table = rng.random((_TABLE, _TABLE), dtype=np.float32)
        # Roof height of each block: left side at [block], right side at [4096 + block].
        self._block_height = (6.0 + 18.0 * rng.random(2 * 4096) ** 1.5).astype(np.float32)
        self._block_tone = rng.random((2, 4096, 3), dtype=np.float32)

    # -- objects -------------------------------------------------------------------------------

    @staticmethod
    def _car_boxes(rng: np.random.Generator) -> list[tuple]:
        length, width = rng.uniform(3.8, 4.8), rng.uniform(1.65, 1.9)
        body_top, roof = rng.uniform(0.9, 1.1), rng.uniform(1.35, 1.6)
        color = tuple(rng.uniform(20, 230, size=3))
        cabin_front = rng.uniform(0.25, 0.35) * length
        return [
            (_K_CAR_BODY, (-width / 2, 0.12, -length / 2), (width / 2, body_top, length / 2), color),
            (
                _K_CAR_CABIN,
                (-width / 2 + 0.08, body_top, -length / 2 + 0.35 * cabin_front),
                (width / 2 - 0.08, roof, length / 2 - cabin_front),
                color,
            ),
        ]

    @staticmethod
    def _pedestrian_boxes(rng: np.random.Generator) -> list[tuple]:
        height = rng.uniform(1.55, 1.9)
        hip, neck = 0.5 * height, 0.85 * height
        half_w = rng.uniform(0.2, 0.27)
        skin = tuple(rng.uniform([90, 60, 40], [235, 190, 160]))
        return [
            (_K_LEGS, (-half_w * 0.8, 0.0, -0.15), (half_w * 0.8, hip, 0.15), tuple(rng.uniform(15, 90, size=3))),
            (_K_TORSO, (-half_w, hip, -0.17), (half_w, neck, 0.17), tuple(rng.uniform(20, 240, size=3))),
            (_K_HEAD, (-0.1, neck, -0.1), (0.1, height, 0.11), skin),
        ]

    # -- motion --------------------------------------------------------------------------------

    def ego_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre (3,) in world metres and camera-to-world rotation (3, 3) at time ``t`` seconds."""
        w, ph = self._speed_w, self._speed_phase
        z = self._z0 + self._v0 * t + self._speed_amp / w * (math.cos(ph) - math.cos(w * t + ph))
        amp, sw, sph = self._sway
        x = _LANE_CENTRE + amp * math.sin(sw * t + sph)
        yaw_amp, yw, yph = self._yaw
        # Heading follows the sway a little (a car steers into its lateral motion) plus its own wobble.
        yaw = math.atan2(amp * sw * math.cos(sw * t + sph), self._v0) + yaw_amp * math.sin(yw * t + yph)
        shake = [a * math.sin(f * t + p) for a, f, p in self._shake]
        bump = 0.02 * math.sin(self._shake[0][1] * 0.7 * t)
        centre = np.array([x, self.config.camera_height + bump, z])
        return centre, _rotation(yaw, self._pitch0 + shake[0], shake[1] * 0.5)

    def _ego_z(self, t: float) -> float:
        return float(self.ego_pose(t)[0][2])

    def _mover_anchor(self, mover: dict, t: float, ego_z: float) -> np.ndarray:
        span = _VIEW_AHEAD + _VIEW_BEHIND
        if mover["kind"] == "leading":
            base, amp, w, ph = mover["dist"]
            return np.array([mover["x"], 0.0, ego_z + base + amp * math.sin(w * t + ph)])
        if mover["kind"] == "along":
            # Wrapping relative to the camera keeps a fixed set of objects near it; the jump
            # happens behind the camera or far ahead, where the object covers (almost) no pixels.
            rel = (self._z0 + mover["z"] + mover["speed"] * t - ego_z + _VIEW_BEHIND) % span - _VIEW_BEHIND
            return np.array([mover["x"], 0.0, ego_z + rel])
        x = (mover["x"] + mover["speed"] * t + _FACADE_X + 1.0) % (2 * _FACADE_X + 2.0) - _FACADE_X - 1.0
        rel = (self._z0 + mover["z"] - ego_z + _VIEW_BEHIND) % span - _VIEW_BEHIND
        return np.array([x, 0.0, ego_z + rel])

    def _boxes(self, t: float, ego_z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All boxes near the camera at time t: mins (N, 3), maxs (N, 3), kinds, colours (N, 3), mover slots."""
        mins, maxs, kinds, colors, slots = [], [], [], [], []
        for slot, mover in enumerate(self._movers):
            anchor = self._mover_anchor(mover, t, ego_z)
            for kind, lo, hi, color in mover["boxes"]:
                mins.append(anchor + lo)
                maxs.append(anchor + hi)
                kinds.append(kind)
                colors.append(color)
                slots.append(slot)
        # Static street furniture, generated by position so that it never depends on time.
        first, last = (
            math.floor((ego_z - _VIEW_BEHIND) / _POLE_SPACING),
            math.ceil((ego_z + _VIEW_AHEAD) / _POLE_SPACING),
        )
        for k in range(first, last + 1):
            for side in (-1, 1):
                if _hash(self.seed, 11, k, side) < 0.25:
                    continue
                z = k * _POLE_SPACING + 6.0 * _hash(self.seed, 12, k, side)
                x = side * (_ROAD_HALF_WIDTH + 0.35)
                height = 4.5 + 3.0 * _hash(self.seed, 13, k, side)
                mins.append(np.array([x - 0.1, 0.0, z - 0.1]))
                maxs.append(np.array([x + 0.1, height, z + 0.1]))
                kinds.append(_K_POLE)
                colors.append((105.0, 105.0, 110.0))
                slots.append(-1)
        first = math.floor((ego_z - _VIEW_BEHIND) / _PARKING_SPACING)
        last = math.ceil((ego_z + _VIEW_AHEAD) / _PARKING_SPACING)
        for k in range(first, last + 1):
            for side in (-1, 1):
                if _hash(self.seed, 21, k, side) >= self.config.parked_car_probability:
                    continue
                rng = np.random.default_rng([self.seed, 22, k + (1 << 40), side + 1])
                anchor = np.array([side * 4.25, 0.0, k * _PARKING_SPACING + rng.uniform(-0.6, 0.6)])
                for kind, lo, hi, color in self._car_boxes(rng):
                    mins.append(anchor + lo)
                    maxs.append(anchor + hi)
                    kinds.append(kind)
                    colors.append(color)
                    slots.append(-1)
        return (
            np.array(mins).reshape(-1, 3),
            np.array(maxs).reshape(-1, 3),
            np.array(kinds, dtype=np.int32),
            np.array(colors, dtype=np.float64).reshape(-1, 3),
            np.array(slots, dtype=np.int32),
        )

    def _mover_displacement(self, t0: float, t1: float) -> np.ndarray:
        """(n_movers, 3) world displacement of each moving object between two times."""
        z0, z1 = self._ego_z(t0), self._ego_z(t1)
        return np.array([self._mover_anchor(m, t1, z1) - self._mover_anchor(m, t0, z0) for m in self._movers]).reshape(
            -1, 3
        )

    # -- rendering -----------------------------------------------------------------------------

    def _cast(self, t: float) -> tuple[_Geometry, dict]:
        """Ray-cast the scene at time t: per pixel the nearest surface, its point and its label."""
        c = self.config
        centre, rot = self.ego_pose(t)
        h, w = c.height, c.width
        # World ray directions scaled so that camera z = 1: a ray parameter is then the depth.
        dirs = _rotate(self._rays, rot)
        dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
        cx, cy, cz = (np.float32(v) for v in centre)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = np.float32(1.0) / dirs
            depth = np.where(dy < -1e-7, -cy * inv[..., 1], np.float32(np.inf))
            prim = np.where(np.isfinite(depth), _P_GROUND, _P_SKY).astype(np.int32)
            # The facade on the side the ray goes to; above its block's roof the ray reaches the sky.
            right = dx > 0
            s = (np.where(right, np.float32(_FACADE_X), np.float32(-_FACADE_X)) - cx) * inv[..., 0]
            block = np.floor(np.clip(cz + s * dz, -1e9, 1e9) * (1 / _BLOCK_LENGTH)).astype(np.int64) & 4095
            roof = np.take(self._block_height, block + 4096 * right)
            hit = (s > 0) & (s < depth) & (cy + s * dy <= roof)
            depth = np.where(hit, s, depth)
            prim[hit] = np.where(right, _P_FACADE_RIGHT, _P_FACADE_LEFT)[hit]

            mins, maxs, kinds, colors, slots = self._boxes(t, centre[2])
            normal_axis = np.zeros((h, w), dtype=np.int8)
            for i, (v0, v1, u0, u1) in self._screen_boxes(mins, maxs, centre, rot):
                sub = inv[v0:v1, u0:u1]
                lo, hi = (mins[i] - centre).astype(np.float32), (maxs[i] - centre).astype(np.float32)
                near, far = [], []
                for axis in range(3):
                    a_, b_ = lo[axis] * sub[..., axis], hi[axis] * sub[..., axis]
                    near.append(np.minimum(a_, b_))
                    far.append(np.maximum(a_, b_))
                t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
                t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
                sub_depth = depth[v0:v1, u0:u1]
                hit = (t_near <= t_far) & (t_near > 0) & (t_near < sub_depth)
                if not hit.any():
                    continue
                sub_depth[hit] = t_near[hit]
                prim[v0:v1, u0:u1][hit] = _P_BOX + i
                # The face a ray enters through is the axis whose slab it enters last.
                axis_map = np.where(near[0] == t_near, 0, np.where(near[1] == t_near, 1, 2))
                normal_axis[v0:v1, u0:u1][hit] = axis_map[hit]

        sky = prim == _P_SKY
        points = centre.astype(np.float32) + np.where(sky, np.float32(0), depth)[..., None] * dirs
        points = np.where(sky[..., None], dirs, points)
        # Label per primitive id (shifted by one so that sky's -1 indexes 0); the ground splits by x.
        box_label = np.array([POLE, CAR, CAR, PEDESTRIAN, PEDESTRIAN, PEDESTRIAN], dtype=np.uint8)
        lut = np.concatenate([np.array([SKY, ROAD, BUILDING, BUILDING], dtype=np.uint8), box_label[kinds]])
        labels = lut[prim + 1]
        labels[(prim == _P_GROUND) & (np.abs(points[..., 0]) >= _ROAD_HALF_WIDTH)] = PAVEMENT
        geometry = _Geometry(depth=depth, prim=prim, points=points, labels=labels, box_motion_ids=slots)
        extras = {"mins": mins, "maxs": maxs, "kinds": kinds, "colors": colors, "normal_axis": normal_axis}
        return geometry, extras

    def _screen_boxes(
        self, mins: np.ndarray, maxs: np.ndarray, centre: np.ndarray, rot: np.ndarray
    ) -> list[tuple[int, tuple[int, int, int, int]]]:
        """(box index, (v0, v1, u0, u1)) for the boxes that can be seen: pixel rows [v0, v1), columns [u0, u1)."""
        h, w = self.config.height, self.config.width
        pick = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=bool)  # (8, 3)
        corners = np.where(pick[None], maxs[:, None], mins[:, None])  # (N, 8, 3)
        cam = (corners - centre) @ rot
        z = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.cx + self.focal * cam[..., 0] / z
            v = self.cy - self.focal * cam[..., 1] / z
        out = []
        for i in range(len(mins)):
            if (z[i] < 0.05).all() or z[i].min() > 400.0:
                continue
            if (z[i] < 0.05).any():
                out.append((i, (0, h, 0, w)))  # straddles the camera plane: test every pixel
                continue
            u0, u1 = max(0, math.floor(u[i].min())), min(w, math.ceil(u[i].max()) + 1)
            v0, v1 = max(0, math.floor(v[i].min())), min(h, math.ceil(v[i].max()) + 1)
            if u0 < u1 and v0 < v1:
                out.append((i, (v0, v1, u0, u1)))
        return out

    def _shade(self, geo: _Geometry, extras: dict) -> np.ndarray:
        """Colour (H, W, 3) float32 in 0..255 of the ray-cast scene before optics and sensor."""
        h, w = geo.prim.shape
        prim = geo.prim.ravel()
        points = geo.points.reshape(-1, 3)
        img = np.empty((h * w, 3), dtype=np.float32)
        noise = self._noise_table

        idx = np.flatnonzero(prim == _P_SKY)
        d = points[idx]
        elevation = d[:, 1] / np.linalg.norm(d, axis=1)
        azimuth = np.arctan2(d[:, 0], d[:, 2])
        clouds = np.clip((_lattice_noise(noise, azimuth * 6.0, elevation * 14.0 + 50.0) - 0.45) * 2.2, 0, 1)[:, None]
        base = self._haze + (self._sky_color - self._haze) * np.clip(elevation * 2.5, 0, 1)[:, None]
        img[idx] = base * (1 - 0.7 * clouds) + 235.0 * 0.7 * clouds

        idx = np.flatnonzero(prim == _P_GROUND)
        x, z = points[idx, 0], points[idx, 2]
        ax = np.abs(x)
        grain = _lattice_noise(noise, x * 3.0 + 100.0, z * 3.0)
        patches = _lattice_noise(noise, x * 0.3 + 30.0, z * 0.15 + 150.0)
        road = ax < _ROAD_HALF_WIDTH
        gray = np.where(road, 85.0 + 30.0 * grain, 140.0 + 25.0 * grain) * (0.85 + 0.3 * patches)
        tile = (np.mod(x, 0.6) < 0.05) | (np.mod(z, 0.6) < 0.05)
        gray[~road & tile] *= 0.7
        centre_dash = (ax < 0.08) & (np.mod(z, 9.0) < 4.0)
        edge_line = np.abs(ax - 3.5) < 0.08
        gray[road & (centre_dash | edge_line)] = 215.0
        gray[(ax >= _ROAD_HALF_WIDTH) & (ax < _ROAD_HALF_WIDTH + 0.2)] = 175.0  # the curb
        img[idx] = gray[:, None] * np.array([1.0, 1.0, 1.02], dtype=np.float32)

        idx = np.flatnonzero((prim == _P_FACADE_LEFT) | (prim == _P_FACADE_RIGHT))
        y, z = points[idx, 1], points[idx, 2]
        side = (prim[idx] == _P_FACADE_RIGHT).astype(np.intp)
        block = np.floor(z / _BLOCK_LENGTH).astype(np.int64) & 4095
        tone = self._block_tone[side, block]
        wall = 70.0 + 110.0 * (0.6 * tone + 0.4 * tone.mean(-1, keepdims=True))
        zw, yw = np.mod(z, 2.5), np.mod(y, 3.0)
        window = (zw > 0.6) & (zw < 1.9) & (yw > 1.0) & (yw < 2.4) & (y > 3.0)
        cell = (np.floor(z / 2.5).astype(np.int64) & 255, np.floor(y / 3.0).astype(np.int64) & 255)
        glass = 40.0 + 50.0 * self._glass_table[cell]
        wall[window] = glass[window, None] * np.array([0.9, 1.0, 1.15], dtype=np.float32)
        wall[np.mod(z, _BLOCK_LENGTH) < 0.4] *= 0.6  # the seam between two buildings
        wall[y < 3.0] *= 0.75
        wall *= (0.9 + 0.2 * _lattice_noise(noise, y * 2.0 + 200.0, z * 2.0))[:, None]
        img[idx] = wall

        idx = np.flatnonzero(prim >= _P_BOX)
        box = prim[idx] - _P_BOX
        kinds = extras["kinds"][box]
        local = points[idx] - extras["mins"][box]
        col = extras["colors"][box].astype(np.float32)
        axis = extras["normal_axis"].ravel()[idx]
        col *= np.array([0.75, 1.1, 0.95], dtype=np.float32)[axis][:, None]  # faces lit by their direction
        glass_face = (kinds == _K_CAR_CABIN) & (axis != 1) & (local[:, 1] > 0.08)
        col[glass_face] = col[glass_face] * 0.15 + 35.0
        body = kinds == _K_CAR_BODY
        col[body & (local[:, 1] < 0.3)] = 25.0  # wheels and the shadow under the car
        width = (extras["maxs"] - extras["mins"])[box, 0]
        lamp = body & (axis == 2) & (local[:, 1] > 0.45) & (local[:, 1] < 0.65)
        lamp &= (local[:, 0] < 0.3) | (local[:, 0] > width - 0.3)
        col[lamp] = (200.0, 30.0, 25.0)
        img[idx] = col

        # Aerial perspective: distant things fade towards the haze colour.
        depth = geo.depth.ravel()
        idx = np.flatnonzero(np.isfinite(depth))
        fade = (1.0 - np.exp(depth[idx] / np.float32(-180.0)))[:, None]
        img[idx] += (self._haze - img[idx]) * fade
        return img.reshape(h, w, 3)

    def _sensor(self, color: np.ndarray, frame_index: int) -> tuple[np.ndarray, bool]:
        """Optics, exposure, noise and dropouts: the uint8 image the camera delivers."""
        c = self.config
        rng = np.random.default_rng([self.seed, 7, frame_index + (1 << 40)])
        img = color.astype(np.float32)
        if c.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), c.blur_sigma)
        img *= np.float32(1.0 + 0.04 * math.sin(0.8 * frame_index / c.fps + self.seed))  # auto-exposure drift
        dropout = self._dropout(frame_index)
        if dropout is not None:
            kind, start = dropout
            if kind == 0:  # the sensor delivers an almost black frame
                img *= np.float32(0.05)
            elif kind == 1:  # heavy noise, washed-out contrast
                img = img * np.float32(0.35) + np.float32(80.0)
                img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(60.0)
            else:  # something covers the lens (a blob that stays for the whole dropout)
                blob = np.random.default_rng([self.seed, 8, start + (1 << 40)])
                h, w = c.height, c.width
                centre = (int(blob.uniform(0.2, 0.8) * w), int(blob.uniform(0.3, 0.8) * h))
                axes = (int(blob.uniform(0.25, 0.45) * w), int(blob.uniform(0.3, 0.6) * h))
                mask = np.zeros((h, w), dtype=np.uint8)
                cv2.ellipse(mask, centre, axes, float(blob.uniform(0, 180)), 0, 360, 255, -1)
                alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.02 * w)[..., None]
                img = img * (1 - alpha) + np.float32(20.0) * alpha
        if c.noise_std > 0:
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(c.noise_std)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), dropout is not None

    def _dropout(self, frame_index: int) -> tuple[int, int] | None:
        """(kind, first frame) of the dropout covering ``frame_index``, or None."""
        c = self.config
        if c.dropout_probability <= 0:
            return None
        for start in range(frame_index - c.max_dropout_frames + 1, frame_index + 1):
            # Starts need a gap before them so that dropouts stay brief and separated.
            if _hash(self.seed, 51, start) < c.dropout_probability:
                length = 1 + int(_hash(self.seed, 52, start) * c.max_dropout_frames)
                if frame_index < start + length:
                    return int(_hash(self.seed, 53, start) * 3), start
        return None

    def _flow(self, geo: _Geometry, t0: float, t1: float, geo_next: _Geometry) -> tuple[np.ndarray, np.ndarray]:
        """Forward flow (H, W, 2) from the frame at t0 to the one at t1, and where it is valid (H, W)."""
        centre1, rot1 = self.ego_pose(t1)
        motion = self._mover_displacement(t0, t1)
        slot = np.full(geo.prim.shape, -1, dtype=np.int32)
        is_box = geo.prim >= _P_BOX
        slot[is_box] = geo.box_motion_ids[geo.prim[is_box] - _P_BOX]
        moved = geo.points.copy()
        moving = slot >= 0
        moved[moving] += motion[slot[moving]].astype(np.float32)
        sky = geo.prim == _P_SKY
        # Sky points are directions: only the camera's rotation moves them.
        rel = np.where(sky[..., None], moved, moved - centre1.astype(np.float32))
        cam = _rotate(rel, rot1.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.cx + self.focal * cam[..., 0] / cam[..., 2]
            v = self.cy - self.focal * cam[..., 1] / cam[..., 2]
        in_front = cam[..., 2] > 1e-6
        flow = np.stack([u, v], -1) - self._pixels
        flow[~in_front] = 0.0
        h, w = geo.prim.shape
        ui, vi = np.rint(np.where(in_front, u, -1)), np.rint(np.where(in_front, v, -1))
        inside = in_front & (ui >= 0) & (ui <= w - 1) & (vi >= 0) & (vi <= h - 1)
        target_depth = geo_next.depth[np.clip(vi, 0, h - 1).astype(np.intp), np.clip(ui, 0, w - 1).astype(np.intp)]
        z = np.where(sky, np.inf, cam[..., 2])
        # Visible where the next frame shows something at the point's depth (sky: sky again). The
        # tolerance grows with the depth change across a pixel there, because the point lands
        # between pixel centres and grazing surfaces (distant road) change depth fast per pixel.
        with np.errstate(invalid="ignore"):
            grad = np.maximum(
                np.abs(np.diff(geo_next.depth, axis=0, prepend=geo_next.depth[:1])),
                np.abs(np.diff(geo_next.depth, axis=1, prepend=geo_next.depth[:, :1])),
            )
        grad = np.nan_to_num(grad, nan=0.0, posinf=np.inf)
        target_grad = grad[np.clip(vi, 0, h - 1).astype(np.intp), np.clip(ui, 0, w - 1).astype(np.intp)]
        tolerance = 0.03 * z + 0.05 + np.minimum(target_grad, 0.25 * z)
        with np.errstate(invalid="ignore"):
            same = np.where(sky, np.isinf(target_depth), np.abs(target_depth - z) <= tolerance)
        return flow.astype(np.float32), inside & same

    def clip(self, start: int, num_frames: int, *, with_flow: bool = True) -> SyntheticClip:
        """Frames start .. start + num_frames - 1 with labels and (optionally) their flow."""
        if num_frames < 1 or start < 0:
            raise ValueError(f"need start >= 0 and num_frames >= 1, got start={start}, num_frames={num_frames}")
        c = self.config
        h, w = c.height, c.width
        frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
        labels = np.empty((num_frames, h, w), dtype=np.uint8)
        n_flow = num_frames - 1 if with_flow else 0
        flow = np.zeros((n_flow, h, w, 2), dtype=np.float32)
        valid = np.zeros((n_flow, h, w), dtype=bool)
        dropped = np.zeros(num_frames, dtype=bool)
        previous: _Geometry | None = None
        for i in range(num_frames):
            k = start + i
            geo, extras = self._cast(k / c.fps)
            frames[i], dropped[i] = self._sensor(self._shade(geo, extras), k)
            labels[i] = geo.labels
            if with_flow and previous is not None:
                flow[i - 1], valid[i - 1] = self._flow(previous, (k - 1) / c.fps, k / c.fps, geo)
            previous = geo
        return SyntheticClip(frames=frames, labels=labels, flow=flow, flow_valid=valid, dropped=dropped)


def generate_video(
    config: SyntheticVideoConfig = SyntheticVideoConfig(), *, seed: int = 0, num_frames: int = 100
) -> SyntheticClip:
    """A whole synthetic video from frame 0: the same seed gives the same pixels, labels and flow."""
    return SyntheticScene(config, seed).clip(0, num_frames)


class SyntheticVideoDataset(Dataset):
    """Training clips from synthetic streets, rendered on demand (nothing is stored).

    Item i is a clip of ``clip_length`` frames from scene ``(seed, i)`` starting at a frame drawn
    from ``(seed, i)`` too, so the clips are the same on every run and every worker (use another
    seed for a validation set); augmentation draws from torch's generator. Each sample
    is the dict of :func:`vseg_core.data.clips.clip_sample`: frames (T, 3, H, W) float in [0, 1],
    labels (T, H, W) int64 (every synthetic frame is labelled; losses use the last), keyframe_index,
    and with ``with_flow`` the ground-truth flow (T-1, 2, H, W) in pixels of the augmented frames.
    """

    palette = SYNTHETIC
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        config: SyntheticVideoConfig = SyntheticVideoConfig(),
        *,
        num_clips: int = 1000,
        clip_length: int = 4,
        seed: int = 0,
        augmentation: ClipAugmentation | None = None,
        keyframe_offset: KeyframeOffset | None = None,
        with_flow: bool = False,
        max_start_frame: int = 3000,
    ) -> None:
        if num_clips < 1 or clip_length < 1:
            raise ValueError(f"need num_clips >= 1 and clip_length >= 1, got {num_clips}, {clip_length}")
        check_keyframe_offset(keyframe_offset, clip_length)
        self.config = config
        self.num_clips = num_clips
        self.clip_length = clip_length
        self.seed = seed
        self.augmentation = augmentation
        self.keyframe_offset = keyframe_offset
        self.with_flow = with_flow
        self.max_start_frame = max_start_frame

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} of a dataset of {self.num_clips}")
        # The clip itself is fixed by (seed, index); augmentation and keyframe offsets come from
        # torch's generator like any torchvision transform, so they change from epoch to epoch.
        where = np.random.default_rng([self.seed, index, 0xC11F])
        scene_seed = int(where.integers(0, 2**31))
        start = int(where.integers(0, self.max_start_frame))
        clip = SyntheticScene(self.config, scene_seed).clip(start, self.clip_length, with_flow=self.with_flow)
        info = {"scene_seed": scene_seed, "start_frame": start, "dropped": clip.dropped.tolist()}
        return augmented_clip_sample(
            clip.frames, clip.labels, augmentation=self.augmentation, keyframe_offset=self.keyframe_offset,
            ignore_index=IGNORE_INDEX, flow=clip.flow if self.with_flow else None, info=info,
        )  # fmt: skip
