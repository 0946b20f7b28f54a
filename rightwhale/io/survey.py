"""A data directory read as one `Survey` (DESIGN.md section 2): labels, test names, annotations inside
their photos (io/data_dirs.py says where its derived files live).

`load_survey` keeps every usable item and records each skipped one as a `Problem` (io/formats.py), so a
batch job can finish and then say what it left out. Fatal, naming the file: a missing train.csv, truncated
photos when asked to check them, or nothing usable.
"""
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rightwhale.core.errors import DataError
from rightwhale.io.data_dirs import WHERE_TO_GET_DATA
from rightwhale.io.formats import (
    Listing,
    Problem,
    read_csv,
    read_labels,
    read_sloth,
    read_submission_names,
    summarize_problems,
)
from rightwhale.io.images import BadImage, check_image, photo_size

PROJECT_ANNOTATIONS = Path(__file__).resolve().parents[2] / "annotations"      # the checkout's annotations/
ANNOTATION_FILES = (("bonnet", "points1.json", "point", ("x", "y")),
                    ("blowhead", "points2.json", "point", ("x", "y")),
                    ("boxes", "head_boxes.json", "rect", ("x", "y", "width", "height")))


@dataclass
class Survey:
    """Everything usable in one data directory; image names are keys into imgs/."""
    root: Path
    train: dict[str, str]                  # image -> whale id, train.csv order
    test: list[str]                        # sample_submission.csv order, usable images only
    classes: list[str]                     # the submission's column order
    bonnet: dict[str, np.ndarray] = field(default_factory=dict)    # image -> [x, y]
    blowhead: dict[str, np.ndarray] = field(default_factory=dict)  # image -> [x, y]
    boxes: dict[str, np.ndarray] = field(default_factory=dict)     # image -> [x, y, w, h]
    test_labels: dict[str, str] = field(default_factory=dict)     # evaluation only
    pattern_types: dict[str, int] = field(default_factory=dict)   # whale -> type
    problems: list[Problem] = field(default_factory=list)
    # every row a submission must have (sample_submission.csv order), also images that are missing or unreadable
    submission_rows: list[str] = field(default_factory=list)

    def image_path(self, name: str) -> Path:
        return self.root / "imgs" / name

    @functools.cached_property
    def _class_index(self) -> dict[str, int]:
        return {whale: i for i, whale in enumerate(self.classes)}

    def label(self, name: str) -> int:
        """Class index of an image (train.csv, or test_labels.csv for a test image)."""
        whale = self.train.get(name) or self.test_labels.get(name)
        if whale not in self._class_index:
            raise DataError(f"{self.root}: image {name!r} has no label among the classes")
        return self._class_index[whale]

    def labels_array(self, names) -> np.ndarray:
        return np.array([self.label(n) for n in names], dtype=np.int32)

    def points(self, name: str) -> np.ndarray | None:
        """[[bonnet x, y], [blowhead x, y]] in photo pixels, or None if not annotated."""
        both = name in self.bonnet and name in self.blowhead
        return np.stack([self.bonnet[name], self.blowhead[name]]) if both else None


def _outside(values: np.ndarray, w: int, h: int) -> bool:
    """Points: pixel centres at integers, so the photo spans [-0.5, size - 0.5].
    Boxes cover pixels x .. x + width - 1, so a whole-photo box is (0, 0, w, h)."""
    x, y = values[:2]
    if values.size == 2:
        return not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5)
    return not (-0.5 <= x and -0.5 <= y and x + values[2] <= w + 0.5 and y + values[3] <= h + 0.5)


def _attach_annotations(survey: Survey, present: set[str], check_images: bool) -> None:
    """Keep the points and boxes that lie inside their photo. Sizes come from photo headers, each read once
    (with check_images every photo's, JPEG trailer included); an unreadable photo leaves the survey."""
    @functools.cache
    def size_of(name: str) -> tuple[int, int] | None:
        try:
            return (check_image if check_images else photo_size)(survey.image_path(name))
        except BadImage as e:
            survey.problems.append(Problem(str(survey.image_path(name)), None, str(e).split(": ", 1)[-1],
                                           "unreadable image"))
            survey.train.pop(name, None)
            survey.test[:] = [n for n in survey.test if n != name]
            return None

    if check_images:
        for name in [*survey.train, *survey.test]:
            size_of(name)
    # the data directory's own annotation files, else (for a Kaggle download of photos: a sample submission,
    # no source.json of crops cut by rightwhale) the project's annotations/, which ship the real points
    # of the Kaggle training photos: a folder of crops with Kaggle-like names must not pick those up
    kaggle = (survey.root / "sample_submission.csv").is_file() and not (survey.root / "source.json").is_file()
    folders = (survey.root, PROJECT_ANNOTATIONS) if kaggle else (survey.root,)
    for attr, filename, cls, keys in ANNOTATION_FILES:
        path = next((d / filename for d in folders if (d / filename).is_file()), None)
        what = "point" if cls == "point" else "box"
        for name, (line, values) in (read_sloth(path, cls, keys, present, survey.problems) if path else {}).items():
            size = size_of(name)
            if size is not None and _outside(values, *size):
                survey.problems.append(Problem(str(path), line, f"{name}: {what} {values.tolist()} lies outside "
                                               f"the {size[0]}x{size[1]} photo", f"{what} outside the photo"))
            elif size is not None:
                getattr(survey, attr)[name] = values


def _attach_extras(survey: Survey, present: set[str]) -> None:
    """The synthetic survey's evaluation labels and pattern types."""
    root, problems = survey.root, survey.problems
    if (root / "test_labels.csv").is_file():
        labels, test = read_labels(root / "test_labels.csv", present, problems), set(survey.test)
        survey.test_labels = {n: w for n, w in labels.items() if n in test}
        problems += [Problem(str(root / "test_labels.csv"), None, f"{name} is not a test image of "
                             "sample_submission.csv", "unknown test image") for name in labels.keys() - test]
    if (root / "whale_types.csv").is_file():
        _, rows = read_csv(root / "whale_types.csv", ("whaleID", "pattern_type"), problems)
        for line, (whale, value) in rows:
            try:
                survey.pattern_types[whale] = int(value)
            except ValueError:
                problems.append(Problem(str(root / "whale_types.csv"), line, f"{whale}: "
                                        f"pattern_type {value!r} is not an integer", "bad value"))


def load_survey(data_dir, check_images: bool = False) -> Survey:
    """Read and validate a Kaggle-layout directory (see the module docstring). check_images also
    checks every photo's header and JPEG trailer (cheap); otherwise only annotated photos are opened."""
    root = Path(data_dir)
    missing = ("data directory does not exist" if not root.is_dir() else
               "no train.csv, so this is not a Kaggle-layout data directory" if not (root / "train.csv").is_file()
               else "no imgs/ folder holding the photos" if not (root / "imgs").is_dir() else None)
    if missing:
        raise DataError(f"{root}: {missing}; {WHERE_TO_GET_DATA}")
    present = Listing(root / "imgs")
    problems: list[Problem] = []
    classes, test, submission_rows = None, [], []
    if (root / "sample_submission.csv").is_file():
        classes, test, submission_rows = read_submission_names(root / "sample_submission.csv", present, problems)
    train = read_labels(root / "train.csv", present, problems)
    known = set(classes or train.values())
    for name, whale in list(train.items()):
        if whale not in known:
            problems.append(Problem(str(root / "train.csv"), None, f"{name}: whale {whale} is "
                                    "not a column of sample_submission.csv", "unknown whale"))
            del train[name]
    survey = Survey(root=root, train=train, test=test, classes=classes or sorted(known), problems=problems,
                    submission_rows=submission_rows)
    _attach_annotations(survey, present, check_images)
    _attach_extras(survey, present)
    if not train:
        raise DataError(f"{root / 'train.csv'}: no usable training images"
                        + (".\n" + summarize_problems(problems, limit=3) if problems else " (it lists none)"))
    return survey


