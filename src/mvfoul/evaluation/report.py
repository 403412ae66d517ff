"""What a model gets wrong: confusion matrices (PNG, CSV) and per-class precision/recall tables."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mvfoul import atomic
from mvfoul.labels import HEAD_CLASSES, HEADS

# Head -> (short name used in file names, class names).
TASKS = {head: (head, HEAD_CLASSES[head]) for head in HEADS}


def confusion_matrix(true: Sequence[int], pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def per_class_rows(matrix: np.ndarray, names: Sequence[str]) -> list[dict[str, object]]:
    """Precision, recall and support per class (NaN where undefined: no prediction / no sample)."""
    rows = []
    for c, name in enumerate(names):
        tp = int(matrix[c, c])
        predicted = int(matrix[:, c].sum())
        support = int(matrix[c, :].sum())
        rows.append(
            {
                "class": name,
                "precision": 100.0 * tp / predicted if predicted else math.nan,
                "recall": 100.0 * tp / support if support else math.nan,
                "support": support,
                "predicted": predicted,
            }
        )
    return rows


def write_confusion_csv(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, matrix.tolist()):
        writer.writerow([name, *row])
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
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_per_class_table(
    rows_by_task: dict[str, list[dict[str, object]]], csv_path: Path, md_path: Path
) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "class", "precision", "recall", "support", "predicted"])
    for task, rows in rows_by_task.items():
        for r in rows:
            writer.writerow(
                [
                    task,
                    r["class"],
                    _num(r["precision"]),
                    _num(r["recall"]),
                    r["support"],
                    r["predicted"],
                ]
            )
    atomic.write_text(csv_path, out.getvalue())
    lines = []
    for task, rows in rows_by_task.items():
        lines += [
            f"### {task}",
            "",
            "| class | precision % | recall % | support | predicted |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['class']} | {_num(r['precision'])} | {_num(r['recall'])} | {r['support']} | {r['predicted']} |"
            for r in rows
        ]
        lines.append("")
    atomic.write_text(md_path, "\n".join(lines))


def _num(value: object) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.1f}"


def write_reports(
    true: Mapping[str, Sequence[int]], pred: Mapping[str, Sequence[int]], out_dir: Path, split: str
) -> list[Path]:
    """Confusion matrices (PNG + CSV) for both tasks and the per-class table; returns the files."""
    written: list[Path] = []
    rows_by_task = {}
    for head, (short, names) in TASKS.items():
        matrix = confusion_matrix(true[head], pred[head], len(names))
        csv_path = out_dir / f"confusion_{short}_{split}.csv"
        png_path = out_dir / f"confusion_{short}_{split}.png"
        write_confusion_csv(matrix, names, csv_path)
        write_confusion_png(matrix, names, f"{short.replace('_', ' + ')} ({split})", png_path)
        rows_by_task[short] = per_class_rows(matrix, names)
        written += [csv_path, png_path]
    table_csv, table_md = out_dir / f"per_class_{split}.csv", out_dir / f"per_class_{split}.md"
    write_per_class_table(rows_by_task, table_csv, table_md)
    return written + [table_csv, table_md]
