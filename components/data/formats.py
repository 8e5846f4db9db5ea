"""On-disk formats of the prepared datasets: the single definition every reader and writer uses.

- Segmentation, TAO Visual ChangeNet layout: ``segment/{A,B,label}/<name>.png`` and
  ``segment/list/<split>.txt`` (one ``<name>.png`` a line). A is the test image, B its
  golden, label a 0/255 change mask.
- Classification, TAO Optical Inspection layout: ``classify/<split>.csv`` with columns
  :data:`CLASSIFY_COLUMNS`; the image of lighting condition ``L`` is
  ``classify/images/<input_path>/<object_name>_<L>.png`` and its golden(s) live under
  ``<golden_path>`` the same way (one sub-folder per golden when ``num_golden > 1``).
- COCO instances for the mask auto-labeler: ``coco/<split>.json``.
- Image labels for the CAM classifier, for sources without masks (class folders):
  ``image_labels/<split>.csv`` with columns :data:`IMAGE_LABEL_COLUMNS`: the record's name,
  its test image (a path relative to the datasets folder: the classify input under the first
  configured light) and its label (``good`` or the defect kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SEGMENT_KINDS = ("A", "B", "label")
CLASSIFY_COLUMNS = ("input_path", "golden_path", "label", "object_name")
PASS_LABEL = "PASS"
SPLITS = ("train", "val", "test")
IMAGE_LABEL_COLUMNS = ("name", "image", "label")


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of the prepared datasets under ``<artifacts>/datasets``."""

    root: Path

    @property
    def segment(self) -> Path:
        return self.root / "segment"

    @property
    def classify(self) -> Path:
        return self.root / "classify"

    @property
    def coco(self) -> Path:
        return self.root / "coco"

    @property
    def classify_images(self) -> Path:
        """TAO's ``images_dir``: the root that CSV paths are relative to."""
        return self.classify / "images"

    def segment_list(self, split: str) -> Path:
        return self.segment / "list" / f"{split}.txt"

    def segment_boxes_only_list(self, split: str) -> Path:
        """Pairs with boxes but no painted mask (A and B only, no label): written only when there are some.

        They stay out of :meth:`segment_list` (their pixels are unknown, never "no change"); with
        ``segment.train.labels: mal`` MAL's masks of their boxes stand in for the label.
        """
        return self.segment / "list_boxes_only" / f"{split}.txt"

    def segment_image(self, kind: str, name: str) -> Path:
        if kind not in SEGMENT_KINDS:
            raise ValueError(f"segment image kind must be one of {SEGMENT_KINDS}, got {kind!r}")
        return self.segment / kind / f"{name}.png"

    def classify_csv(self, split: str) -> Path:
        return self.classify / f"{split}.csv"

    def coco_json(self, split: str) -> Path:
        return self.coco / f"{split}.json"

    @property
    def image_labels(self) -> Path:
        return self.root / "image_labels"

    def image_labels_csv(self, split: str) -> Path:
        return self.image_labels / f"{split}.csv"


def read_segment_list(path: Path) -> list[str]:
    """Sample names (without ``.png``) listed in a TAO segmentation list file."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name[:-4] if name.endswith(".png") else name for name in names]


def read_image_labels(path: Path) -> list[dict[str, str]]:
    """The rows of an ``image_labels/<split>.csv``; a missing column or empty cell raises naming the line."""
    import csv

    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in IMAGE_LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: header {reader.fieldnames} lacks column(s) {missing}")
        rows = []
        for row in reader:
            empty = [c for c in IMAGE_LABEL_COLUMNS if not (row.get(c) or "").strip()]
            if empty:
                raise ValueError(f"{path}:{reader.line_num}: empty {', '.join(empty)}")
            rows.append({c: row[c].strip() for c in IMAGE_LABEL_COLUMNS})
    return rows


def classify_image_path(images_dir: Path, input_path: str, object_name: str, light: str) -> Path:
    """TAO's rule: ``<images_dir>/<input_path>/<object_name>_<Light>.png``."""
    return images_dir / input_path / f"{object_name}_{light}.png"


def golden_image_paths(images_dir: Path, golden_path: str, object_name: str, light: str, num_golden: int) -> list[Path]:
    """The golden file(s) of one row: the TAO rule, with sub-folders ``0..N-1`` for N goldens."""
    if num_golden == 1:
        return [classify_image_path(images_dir, golden_path, object_name, light)]
    return [classify_image_path(images_dir, f"{golden_path}/{k}", object_name, light) for k in range(num_golden)]
