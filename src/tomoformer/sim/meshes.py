"""Triangle meshes for ray tracing: height maps extruded to buildings, PLY I/O, and rasterisation back to grids.

World frame (shared with ``tomoformer.sim.sionna``): x east, y north, z up, metres. A tile of H x W cells of
``cell`` metres has its south-west corner at ``origin`` (x0, y0); cell (row i, col j) covers
x in [x0 + j cell, x0 + (j + 1) cell] and y in [y0 + (H - 1 - i) cell, y0 + (H - i) cell], so row 0 is north.
Everything here is plain NumPy, so it is usable (and tested) without Sionna or Mitsuba installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tomoformer.errors import DataError


@dataclass
class TriangleMesh:
    """vertices float32 [V, 3] metres, faces int32 [F, 3] indices (counter-clockwise seen from outside)."""

    vertices: np.ndarray
    faces: np.ndarray

    @staticmethod
    def concat(meshes: Iterable[TriangleMesh]) -> TriangleMesh:
        """One mesh holding all triangles of ``meshes``."""
        verts, faces, offset = [], [], 0
        for mesh in meshes:
            verts.append(mesh.vertices)
            faces.append(mesh.faces + offset)
            offset += len(mesh.vertices)
        if not verts:
            return TriangleMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
        return TriangleMesh(np.concatenate(verts).astype(np.float32), np.concatenate(faces).astype(np.int32))


def _quad_mesh(quads: np.ndarray, normals: np.ndarray) -> TriangleMesh:
    """Quads [Q, 4, 3] (corners in cyclic order) to a welded triangle mesh whose faces look along ``normals``.

    Welding shared corners gives Mitsuba the edge adjacency that Sionna's diffraction needs: it only
    diffracts on edges shared by two triangles (wedges), and silhouettes are found through adjacency.
    """
    if len(quads) == 0:
        return TriangleMesh.concat([])
    q = quads.astype(np.float64)
    # Mitsuba derives face normals from the winding; flip quads whose winding disagrees with the wanted normal.
    wind = np.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0])
    flip = np.einsum("qk,qk->q", wind, normals) < 0
    q[flip] = q[flip][:, ::-1]
    base = 4 * np.arange(len(q))[:, None]
    faces = (base + np.array([0, 1, 2, 0, 2, 3])).reshape(-1, 3)
    vertices, index = np.unique(np.round(q.reshape(-1, 3), 5), axis=0, return_inverse=True)
    return TriangleMesh(vertices.astype(np.float32), index.reshape(-1)[faces].astype(np.int32))


def _corners(xa, xb, ya, yb, za, zb) -> np.ndarray:
    """[Q, 4, 3] corners of axis-aligned quads: (xa, ya, za) -> (xb, yb, za) -> (xb, yb, zb) -> (xa, ya, zb) for
    walls (x or y constant), or the roof rectangle [xa, xb] x [ya, yb] at za when za == zb."""
    xa, xb, ya, yb, za, zb = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (xa, xb, ya, yb, za, zb)))
    roof = za == zb
    c = np.empty((*xa.shape, 4, 3))
    c[..., 0, :] = np.stack([xa, ya, za], -1)
    c[..., 1, :] = np.stack([xb, np.where(roof, ya, yb), za], -1)
    c[..., 2, :] = np.stack([xb, yb, zb], -1)
    c[..., 3, :] = np.stack([xa, np.where(roof, yb, ya), zb], -1)
    return c


def extrude_heights(
    heights: np.ndarray,
    cell: float,
    materials: np.ndarray | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
) -> dict[int, TriangleMesh]:
    """Buildings of a height map as surfaces closed above (roofs and walls, no floors), one mesh per material.

    heights: [H, W] metres (<= 0: no building); materials: int [H, W] material index per cell (default all 0).
    One roof quad per built cell and one wall quad per cell edge between different heights, so that
    neighbouring faces share whole edges (no T-junctions). A wall spans the lower to the higher roof, belongs
    to (has the material of) the taller cell and faces the lower one. Returns {material index: mesh}.
    """
    heights = np.where(np.asarray(heights, np.float64) > 0, heights, 0.0)
    H, W = heights.shape
    materials = np.zeros((H, W), np.int64) if materials is None else np.asarray(materials, np.int64)
    x0, y0 = origin
    ph, pm = np.pad(heights, 1), np.pad(materials, 1)
    quads, normals, owners = [], [], []

    i, j = np.nonzero(heights > 0)
    y_top = y0 + (H - i) * cell
    z = heights[i, j]
    quads.append(_corners(x0 + j * cell, x0 + (j + 1) * cell, y_top - cell, y_top, z, z))
    normals.append(np.broadcast_to([0.0, 0.0, 1.0], (len(i), 3)))
    owners.append(materials[i, j])
    # Vertical grid lines: line j separates cells (i, j - 1) (west, a) and (i, j) (east, b).
    a, b = ph[1:-1, :-1], ph[1:-1, 1:]
    i, j = np.nonzero(a != b)
    west = a[i, j] > b[i, j]
    x = x0 + j * cell
    y_low = y0 + (H - 1 - i) * cell
    lo, hi = np.minimum(a, b)[i, j], np.maximum(a, b)[i, j]
    quads.append(_corners(x, x, y_low, y_low + cell, lo, hi))
    normals.append(np.stack([np.where(west, 1.0, -1.0), np.zeros(len(i)), np.zeros(len(i))], -1))
    owners.append(np.where(west, pm[1:-1, :-1][i, j], pm[1:-1, 1:][i, j]))
    # Horizontal grid lines: line i separates cells (i - 1, j) (north, a) and (i, j) (south, b).
    a, b = ph[:-1, 1:-1], ph[1:, 1:-1]
    i, j = np.nonzero(a != b)
    north = a[i, j] > b[i, j]
    y = y0 + (H - i) * cell
    lo, hi = np.minimum(a, b)[i, j], np.maximum(a, b)[i, j]
    quads.append(_corners(x0 + j * cell, x0 + (j + 1) * cell, y, y, lo, hi))
    normals.append(np.stack([np.zeros(len(i)), np.where(north, -1.0, 1.0), np.zeros(len(i))], -1))
    owners.append(np.where(north, pm[:-1, 1:-1][i, j], pm[1:, 1:-1][i, j]))

    q, n, owner = np.concatenate(quads), np.concatenate(normals), np.concatenate(owners)
    return {int(m): _quad_mesh(q[owner == m], n[owner == m]) for m in np.unique(owner)}


def heightfield(ground: np.ndarray, cell: float, origin: tuple[float, float] = (0.0, 0.0)) -> TriangleMesh:
    """A terrain surface through the centres of the cells of ``ground`` [H, W] metres, facing up: two triangles
    per square of four neighbouring cell centres. Cell (i, j) is centred at (x0 + (j + 0.5) cell,
    y0 + (H - i - 0.5) cell), as in the module's tile convention."""
    ground = np.asarray(ground, np.float64)
    H, W = ground.shape
    if H < 2 or W < 2:
        raise DataError(f"a heightfield needs at least 2 x 2 cells, got {H} x {W}")
    x0, y0 = origin
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    vertices = np.stack([x0 + (jj + 0.5) * cell, y0 + (H - ii - 0.5) * cell, ground], -1).reshape(-1, 3)
    v = (ii * W + jj)[:-1, :-1].reshape(-1)
    # Counter-clockwise seen from above (x east, y north, row index growing southwards).
    faces = np.concatenate([np.stack([v, v + W, v + W + 1], 1), np.stack([v, v + W + 1, v + 1], 1)])
    return TriangleMesh(vertices.astype(np.float32), faces.astype(np.int32))


def ground_plane(x0: float, y0: float, x1: float, y1: float, z: float = 0.0) -> TriangleMesh:
    """The rectangle [x0, x1] x [y0, y1] at height z, facing up."""
    return _quad_mesh(_corners([x0], [x1], [y0], [y1], [z], [z]), np.array([[0.0, 0.0, 1.0]]))


def write_ply(path: str | os.PathLike[str], mesh: TriangleMesh) -> None:
    """Binary little-endian PLY with float x, y, z vertices and uchar/int triangle lists (Mitsuba reads it)."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(mesh.vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(mesh.faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    faces = np.zeros(len(mesh.faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    faces["n"], faces["v"] = 3, mesh.faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(mesh.vertices, "<f4").tobytes())
        fh.write(faces.tobytes())


_PLY_TYPES = {
    "char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "i2", "ushort": "u2", "int16": "i2",
    "uint16": "u2", "int": "i4", "uint": "u4", "int32": "i4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip


def read_ply(path: str | os.PathLike[str]) -> TriangleMesh:
    """Vertices and triangles of a binary little-endian PLY (as shipped with Sionna's scenes and written above).

    Extra vertex properties (normals, uv, colours) are skipped; faces must be a triangle list property.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DataError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1 :]
    if "format binary_little_endian 1.0" not in [h.strip() for h in header]:
        raise DataError(f"{path}: only binary little-endian PLY is supported")
    elements: list[tuple[str, int, list[list[str]]]] = []
    for line in header:
        parts = line.split()
        if parts[:1] == ["element"]:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[:1] == ["property"]:
            elements[-1][2].append(parts[1:])
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, count, props in elements:
        if any(p[0] == "list" for p in props):
            if len(props) != 1 or props[0][0] != "list":
                raise DataError(f"{path}: unsupported PLY element {name!r} (a list next to other properties)")
            _, count_t, index_t, _ = props[0]
            dtype = np.dtype([("n", _PLY_TYPES[count_t]), ("v", "<" + _PLY_TYPES[index_t], (3,))])
            rows = np.frombuffer(body, dtype, count, offset)
            if count and (rows["n"] != 3).any():
                raise DataError(f"{path}: only triangle faces are supported")
            out[name] = rows["v"]
        else:
            dtype = np.dtype([(p[1], "<" + _PLY_TYPES[p[0]]) for p in props])
            rows = np.frombuffer(body, dtype, count, offset)
            out[name] = np.stack([rows[c] for c in "xyz"], axis=1) if name == "vertex" else rows
        offset += dtype.itemsize * count
    return TriangleMesh(out["vertex"].astype(np.float32), out.get("face", np.zeros((0, 3))).astype(np.int32))


def rasterise(
    meshes: Iterable[TriangleMesh],
    origin: tuple[float, float],
    shape: tuple[int, int],
    cell: float,
    z: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Building mask and roof heights of a tile, from the triangles above each cell centre.

    A vertical ray from the cell centre at height ``z`` going up crosses a building's surface an odd number
    of times when it starts inside (building meshes have roofs but often no floors, so "up" is the reliable
    direction). Returns (inside bool [H, W], top float32 [H, W]: highest surface above the cell centre in
    metres, ``z`` where there is none). Vertical walls project to lines and never count.
    """
    H, W = shape
    x0, y0 = origin
    # Sample points sit a hair off the cell centres: grid-aligned roof triangles share edges that pass exactly
    # through centres, where one crossing would otherwise count twice or not at all.
    cx = x0 + (np.arange(W) + 0.5) * cell + 1.234e-4 * cell
    cy = y0 + (H - np.arange(H) - 0.5) * cell + 2.345e-4 * cell
    crossings = np.zeros((H, W), np.int32)
    top = np.full((H, W), z, np.float32)
    for mesh in meshes:
        tri = mesh.vertices[mesh.faces].astype(np.float64)  # [F, 3, 3]
        if len(tri) == 0:
            continue
        lo, hi = tri[:, :, :2].min(axis=1), tri[:, :, :2].max(axis=1)
        j0 = np.ceil((lo[:, 0] - cx[0]) / cell).astype(np.int64).clip(0, W)
        j1 = np.floor((hi[:, 0] - cx[0]) / cell).astype(np.int64).clip(-1, W - 1) + 1
        i0 = np.ceil((cy[0] - hi[:, 1]) / cell).astype(np.int64).clip(0, H)
        i1 = np.floor((cy[0] - lo[:, 1]) / cell).astype(np.int64).clip(-1, H - 1) + 1
        (todo,) = np.nonzero((j1 > j0) & (i1 > i0) & (tri[:, :, 2].max(axis=1) > z))
        for f in todo:
            (ax, ay, az), (bx, by, bz), (qx, qy, qz) = tri[f]
            area = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
            if abs(area) < 1e-12:
                continue  # vertical face (or degenerate): a vertical ray never crosses it
            px, py = cx[None, j0[f] : j1[f]], cy[i0[f] : i1[f], None]
            # Barycentric weights of the cell centres; inside when all are >= 0 (either winding).
            wa = ((bx - px) * (qy - py) - (by - py) * (qx - px)) / area
            wb = ((qx - px) * (ay - py) - (qy - py) * (ax - px)) / area
            wc = 1.0 - wa - wb
            height = wa * az + wb * bz + wc * qz
            hit = (wa >= 0) & (wb >= 0) & (wc >= 0) & (height > z)
            crossings[i0[f] : i1[f], j0[f] : j1[f]] += hit
            view = top[i0[f] : i1[f], j0[f] : j1[f]]
            np.maximum(view, np.where(hit, height, z), out=view)
    return crossings % 2 == 1, top
