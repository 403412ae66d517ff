"""What a model gets wrong: confusion matrices (PNG, CSV) and per-class precision/recall tables."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mvfoul import atomic
from mvfoul.labels import HEAD_CLASSES


def confusion_matrix(true: Sequence[int], pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]``."""
    cells = np.asarray(true, dtype=np.int64) * num_classes + np.asarray(pred, dtype=np.int64)
    return np.bincount(cells, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_rows(matrix: np.ndarray, names: Sequence[str]) -> list[list[object]]:
    """[class, precision %, recall %, support, predicted] per class, as written (``n/a`` where
    undefined: no prediction / no sample)."""
    rows: list[list[object]] = []
    for index, name in enumerate(names):
        right = int(matrix[index, index])
        predicted = int(matrix[:, index].sum())
        support = int(matrix[index].sum())
        precision = f"{100.0 * right / predicted:.1f}" if predicted else "n/a"
        recall = f"{100.0 * right / support:.1f}" if support else "n/a"
        rows.append([name, precision, recall, support, predicted])
    return rows


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    atomic.write_text(path, out.getvalue())


def write_confusion_png(matrix: np.ndarray, names: Sequence[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (servers, CI)
    import matplotlib.pyplot as plt

    support = matrix.sum(axis=1, keepdims=True)
    # Colour by row share (recall per cell) so rare classes are as readable as common ones;
    # the numbers written in the cells are the counts.
    shares = np.divide(matrix, support, out=np.zeros(matrix.shape, dtype=float), where=support > 0)
    size = 2.0 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_reports(
    true: Mapping[str, Sequence[int]], pred: Mapping[str, Sequence[int]], out_dir: Path, split: str
) -> list[Path]:
    """Confusion matrices (PNG + CSV) for both tasks and the per-class table; returns the files."""
    written: list[Path] = []
    table: list[list[object]] = [["task", "class", "precision", "recall", "support", "predicted"]]
    markdown: list[str] = []
    for head, names in HEAD_CLASSES.items():
        matrix = confusion_matrix(true[head], pred[head], len(names))
        csv_path = out_dir / f"confusion_{head}_{split}.csv"
        png_path = out_dir / f"confusion_{head}_{split}.png"
        confusion_rows: list[list[object]] = [["true \\ predicted", *names]]
        for name, counts in zip(names, matrix.tolist()):
            confusion_rows.append([name, *counts])
        _write_csv(csv_path, confusion_rows)
        write_confusion_png(matrix, names, f"{head.replace('_', ' + ')} ({split})", png_path)
        written += [csv_path, png_path]
        rows = per_class_rows(matrix, names)
        table += [[head, *row] for row in rows]
        markdown += [f"### {head}", "", "| class | precision % | recall % | support | predicted |"]
        markdown.append("|---|---|---|---|---|")
        for row in rows:
            markdown.append("| " + " | ".join(map(str, row)) + " |")
        markdown.append("")
    table_csv = out_dir / f"per_class_{split}.csv"
    table_md = out_dir / f"per_class_{split}.md"
    _write_csv(table_csv, table)
    atomic.write_text(table_md, "\n".join(markdown))
    return written + [table_csv, table_md]
