"""Learning a polytope: fit {z : G z ≤ h} so that projecting onto it imitates
projecting onto the unit disc.

A module holds a learnable G (k×2) and h (k); its layer projects points onto
the polytope. Trained with Adam on random points and their projections onto
the unit ball, the polygon grows into a k-gon close to the circle. The script
prints the loss curve and saves a PNG with the data and the learned polygon
before and after training (matplotlib, non-interactive backend).

Run:  python examples/polytope.py [--full] [--out FILE.png]
"""

from __future__ import annotations

import argparse
import pathlib

import cvxpy as cp
import numpy as np
import torch

from conelayers.torch import CvxpyLayer


class PolytopeProjection(torch.nn.Module):
    def __init__(self, sides: int) -> None:
        super().__init__()
        x = cp.Parameter(2)
        G, h = cp.Parameter((sides, 2)), cp.Parameter(sides)
        z = cp.Variable(2)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(z - x)), [G @ z <= h])
        self.layer = CvxpyLayer(problem, [x, G, h], [z])
        angles = torch.linspace(0, 2 * torch.pi, sides + 1, dtype=torch.float64)[:-1] + 0.3
        self.G = torch.nn.Parameter(torch.stack([torch.cos(angles), torch.sin(angles)], 1)
                                    + 0.3 * torch.randn(sides, 2, dtype=torch.float64))
        self.h = torch.nn.Parameter(0.3 * torch.ones(sides, dtype=torch.float64))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.layer(points, self.G, self.h)[0]


def polygon(G: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Vertices of {z : Gz ≤ h} (bounded, 2-D), in order: every feasible
    intersection of two facet lines, sorted by angle around their mean."""
    vertices = []
    for i in range(len(h)):
        for j in range(i + 1, len(h)):
            M = np.stack([G[i], G[j]])
            if abs(np.linalg.det(M)) > 1e-9:
                v = np.linalg.solve(M, [h[i], h[j]])
                if np.all(G @ v <= h + 1e-7):
                    vertices.append(v)
    if not vertices:
        return np.zeros((0, 2))
    V = np.array(vertices)
    centre = V.mean(axis=0)
    return V[np.argsort(np.arctan2(V[:, 1] - centre[1], V[:, 0] - centre[0]))]


def main(full: bool = False, out: str | None = None) -> list[float]:
    torch.manual_seed(0)
    sides, steps, batch = (8, 150, 64) if full else (6, 15, 16)
    model = PolytopeProjection(sides)
    G0, h0 = model.G.detach().numpy().copy(), model.h.detach().numpy().copy()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for step in range(steps):
        points = 2 * torch.randn(batch, 2, dtype=torch.float64)
        target = points / torch.clamp(points.norm(dim=1, keepdim=True), min=1.0)
        loss = ((model(points) - target) ** 2).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.4f}")

    path = pathlib.Path(out or pathlib.Path(__file__).parent / "output" / "polytope.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = 2 * torch.randn(200, 2, dtype=torch.float64)
    with torch.no_grad():
        learned = model(points).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    circle = np.stack([np.cos(np.linspace(0, 2 * np.pi, 200)),
                       np.sin(np.linspace(0, 2 * np.pi, 200))], 1)
    for ax, (G, h, title) in zip(axes, [(G0, h0, "before training"),
                                        (model.G.detach().numpy(), model.h.detach().numpy(),
                                         "after training")], strict=True):
        ax.plot(*circle.T, "k--", lw=1, label="unit circle")
        verts = polygon(G, h)
        if len(verts):
            ax.fill(*np.vstack([verts, verts[:1]]).T, alpha=0.3, label="polytope")
        ax.scatter(*points.numpy().T, s=4, c="gray", label="data")
        if title == "after training":
            ax.scatter(*learned.T, s=4, c="C3", label="projections")
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more sides and steps")
    parser.add_argument("--out", default=None, help="PNG path (default examples/output/)")
    args = parser.parse_args()
    main(args.full, args.out)
