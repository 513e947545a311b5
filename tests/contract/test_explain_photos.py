"""The committed tagger's occlusion maps point at what its top tag depends on (a deletion test): on 200
CIFAR validation photos, covering the map's top 10% of cells together lowers the top tag's probability
more than covering as many cells chosen at random, in at least 90% of the photos."""

from __future__ import annotations

import math

import numpy as np

from loadtests.payloads import cifar_jpegs
from service.runtime import load_model
from service.tasks.image.occlusion import cells, occluded, occlusion_map
from service.tasks.image.photos import decode_photo, probabilities, to_input
from tests.conftest import MODELS

GRID = 8  # NNSERVE_EXPLAIN_GRID's default


def test_covering_the_maps_top_cells_hurts_the_top_tag_more_than_random_cells():
    model = load_model(MODELS / "image-tagging")
    spec = model.card.image
    assert spec is not None

    def score(images: np.ndarray) -> np.ndarray:
        return probabilities(model.run(images), spec.output_is)

    boxes = cells(spec.size, GRID)
    count = math.ceil(0.1 * len(boxes))
    rng = np.random.default_rng(0)
    wins, falls = [], []
    for _, jpeg in cifar_jpegs(20):  # 20 photos of each of the 10 classes
        tensor = to_input(decode_photo(jpeg, 10**8, ["photo"]), spec)
        top, p, grid, _ = occlusion_map(tensor, spec, GRID, score)
        chosen = [boxes[i] for i in np.argsort(-grid.ravel(), kind="stable")[:count]]
        random = [boxes[i] for i in rng.choice(len(boxes), count, replace=False)]
        by_map, by_chance = (p - score(_covered(tensor, spec, b))[0, top] for b in (chosen, random))
        wins.append(by_map > by_chance)
        falls.append((by_map, by_chance))
    share = float(np.mean(wins))
    mean_map, mean_chance = np.mean(falls, axis=0)
    print(
        f"deletion test, {len(wins)} photos: the map's top {count} of {len(boxes)} cells lowered the top tag more "
        f"than {count} random ones in {share:.1%}; mean fall {mean_map:.3f} against {mean_chance:.3f}"
    )
    assert len(wins) == 200 and share >= 0.9


def _covered(tensor: np.ndarray, spec, boxes) -> np.ndarray:
    """The input with every box covered at once, in the input's mean colour, as the map covers each alone."""
    one = occluded(tensor, spec, boxes[:1])  # the colour the map covers with: the whole input's mean
    out = tensor.copy()
    for top, bottom, left, right in boxes:
        if spec.layout == "NCHW":
            out[:, :, top:bottom, left:right] = one[:, :, boxes[0][0] : boxes[0][0] + 1, boxes[0][2] : boxes[0][2] + 1]
        else:
            out[:, top:bottom, left:right, :] = one[:, boxes[0][0] : boxes[0][0] + 1, boxes[0][2] : boxes[0][2] + 1, :]
    return out
