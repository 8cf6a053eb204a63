"""The thesis' published numbers (Kocaman 2024, chapter 4), carried over as facts.

Source: ../shared/paper/final_bn_chapter.txt. Values are copied as printed,
including the chapter's own rounding; nothing here is recomputed. Class
"minority" is the thesis' Unhealthy (class 1), "majority" its Healthy (class 0).
"""

from __future__ import annotations

# Table 4.2: averaged test F1 over 10 runs, VGG19, 10 epochs.
# plant -> class -> (without final BN, with WL (no BN), with final BN (no WL), BN total improvement).
# "BN total improvement" is printed as final BN minus WL (0.9562 - 0.7947 = 0.1615).
TABLE_4_2: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "Apple": {"minority": (0.2942, 0.7947, 0.9562, 0.1615), "majority": (0.7075, 0.8596, 0.9577, 0.0981)},
    "Pepper": {"minority": (0.7237, 0.8939, 0.9575, 0.0636), "majority": (0.8229, 0.9121, 0.9558, 0.0437)},
    "Tomato": {"minority": (0.5688, 0.8671, 0.9786, 0.1115), "majority": (0.7708, 0.9121, 0.9780, 0.0659)},
}
TABLE_4_2_COLUMNS = ("plain", "WL", "final_BN", "improvement")
# The headline sweep's labels of those columns, and the same arms' names on a method axis (finalbn.sweep.methods).
TABLE_4_2_ARMS = {"plain": 0, "WL": 1, "final_BN": 2, "weighted_loss": 1, "final_bn": 2}

# Table 4.3: best configurations on Apple, ResNet34: class -> rows of
# (Config Id, precision, recall, F1, epoch).
TABLE_4_3: dict[str, tuple[tuple[int, float, float, float, int], ...]] = {
    "minority": ((31, 0.9856, 0.9133, 0.9481, 6), (23, 0.9718, 0.9200, 0.9452, 6), (20, 0.9926, 0.8933, 0.9404, 7)),
    "majority": ((31, 0.9193, 0.9867, 0.9518, 6), (23, 0.9241, 0.9733, 0.9481, 6), (20, 0.9030, 0.9933, 0.9460, 7)),
}

# Table 4.4: best three and worst three configurations, minority F1, ResNet34:
# Config Id -> (Apple, Pepper, Tomato, Average).
TABLE_4_4: dict[int, tuple[float, float, float, float]] = {
    29: (0.9332, 0.9700, 0.9866, 0.9633),
    28: (0.9332, 0.9566, 0.9966, 0.9622),
    31: (0.9499, 0.9433, 0.9833, 0.9588),
    49: (0.6804, 0.5080, 0.5339, 0.5741),
    48: (0.5288, 0.5638, 0.5638, 0.5521),
    50: (0.6377, 0.5027, 0.4528, 0.5311),
}

# Figure 4.5's worked example: adding the final BN alone takes minority F1
# from 0.42 to 0.95, "a (0.95 - 0.42) / 0.42 = 1.2 gain factor".
FIGURE_4_5_BN = {"baseline": 0.42, "option": 0.95, "gain_factor": 1.2}

# Table 4.6: test F1 at ratio 0.01, epoch 10, batch 64. row -> plant -> (healthy, unhealthy).
TABLE_4_6: dict[str, dict[str, tuple[float, float]]] = {
    "no final BN": {"Apple": (0.71, 0.22), "Pepper": (0.74, 0.45), "Tomato": (0.74, 0.46)},
    "final BN": {"Apple": (0.92, 0.91), "Pepper": (0.94, 0.94), "Tomato": (0.98, 0.98)},
    "final BN removed at test": {"Apple": (0.74, 0.83), "Pepper": (0.75, 0.82), "Tomato": (0.78, 0.85)},
}
# The bn_removal sweep's labels of those rows (its final-norm values and its derived arm).
TABLE_4_6_ARMS = {"none": "no final BN", "bn": "final BN", "removed": "final BN removed at test"}

# Table 4.7: MNIST, simple CNN, minority at 1%. setting (finalbn label) ->
# digit -> (without final BN, with final BN). Minority digits: the first of "3v8",
# "2v8", "3v5", "3v5+8"; both 3 and 5 in "3+5v8".
TABLE_4_7: dict[str, dict[str, tuple[float, float]]] = {
    "3v8": {"3": (0.19, 0.55), "8": (0.69, 0.76)},
    "2v8": {"2": (0.25, 0.50), "8": (0.70, 0.74)},
    "3v5": {"3": (0.24, 0.54), "5": (0.70, 0.76)},
    "3v5+8": {"3": (0.06, 0.00), "5": (0.77, 0.77), "8": (0.78, 0.78)},
    "3+5v8": {"3": (0.28, 0.58), "5": (0.32, 0.59), "8": (0.56, 0.69)},
}

# Table 4.8: MNIST 3 (1%) vs 8, one hidden layer of 128, 100 epochs. The row
# labels are finalbn's (experiments.TABLE_4_8_ROWS, same order) -> (class 3, class 8).
TABLE_4_8: dict[str, tuple[float, float]] = {
    "sigmoid-bce": (0.17, 0.67),
    "softmax-bce": (0.00, 0.67),
    "softmax-bce-firstbn": (0.60, 0.78),
    "softmax-cce": (0.67, 0.80),
    "sigmoid-bce-finalbn": (0.05, 0.67),
    "softmax-bce-finalbn": (0.85, 0.88),
    "softmax-bce-firstbn-finalbn": (0.83, 0.87),
    "softmax-cce-finalbn": (0.88, 0.90),
    "softmax-cce-firstbn-finalbn": (0.78, 0.85),
}

# Figure 4.9: Brier score without / with final BN.
FIGURE_4_9_BRIER = {"none": 0.349, "bn": 0.158}

# Figures 4.6 and 4.7, read off by eye in the thesis: the gain "levels off around"
# a minority ratio of 0.10, and batch size 64 "reaches the highest score".
FIGURE_4_6_THRESHOLD = 0.10
FIGURE_4_7_BEST_BATCH = 64
