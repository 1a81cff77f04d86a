"""Letters A-J, NotMNIST-like, rendered from fonts.

NotMNIST (Bulatov, 2011) is letters A-J rendered from thousands of fonts; it cannot be
downloaded here, so this module rebuilds a set the same way from the fonts listed in
`_font_manifest.py` (Debian font packages, checked by SHA-256). It is NotMNIST-like,
not NotMNIST: fewer fonts (about 540 files in about 110 families), cleaner glyphs, and
no mislabelled images, so accuracies on it are not comparable with published NotMNIST
numbers.

Each image is one glyph, white on black like MNIST, scaled to fill most of a 28x28
frame, with a small random affine jitter (rotation, shear, aspect, scale, shift). The
fonts are split by family group, so no family (nor a metric clone of it, such as
Nimbus Sans and Liberation Sans) appears in both splits: the test split measures
generalisation to unseen fonts. Everything is drawn from fixed seeds, so one
`LETTERS_VERSION` gives the same bytes on every machine with the same Pillow.

Users with the real notMNIST may pass `notmnist=PATH` to `load_numpy("letters", ...)`:
a `notMNIST_large.tar.gz` or its extracted folder (A/ ... J/ of PNGs). As in the paper
000, 60,000 training and 10,000 test images are drawn at random, disjoint, from it.
"""

import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np

from mtl_tf.data import paths
from mtl_tf.data._font_manifest import FONTS

LETTERS = "ABCDEFGHIJ"
LETTERS_VERSION = "1"
SPLITS = {"train": 60_000, "test": 10_000}
_SEEDS = {"train": 1_000, "test": 2_000}
TEST_FONT_SHARE = 0.2
# SHA-256 of images.tobytes() + labels.tobytes() for each split of this version, as
# rendered with Pillow 13.0 (its bundled FreeType rasterises the glyphs).
RENDERED_SHA256 = {
    "train": "c5524f7d48d13330918a1b9c868fc3919864704d31f4ec74f09a9dafb649fdaf",
    "test": "5589b4fa1d60934b1f1ce7c4252cbbd5a9bbcd49b1bafbbce127815ccf5e0bed",
}
_OVERSAMPLE = 4  # render at 4x, then area-average down to 28x28
_SIZE = 28

# Metric-compatible clones of the same design, kept in one split.
_CLONE_GROUPS = {
    "helvetica": ("Nimbus Sans", "Nimbus Sans Narrow", "Liberation Sans", "TeX Gyre Heros",
                  "TeX Gyre Heros Cn", "FreeSans"),
    "times": ("Nimbus Roman", "Liberation Serif", "TeX Gyre Termes", "FreeSerif"),
    "courier": ("Nimbus Mono PS", "Liberation Mono", "TeX Gyre Cursor", "FreeMono"),
    "palatino": ("P052", "TeX Gyre Pagella"),
    "bookman": ("URW Bookman", "TeX Gyre Bonum"),
    "century-schoolbook": ("C059", "TeX Gyre Schola"),
    "avant-garde": ("URW Gothic", "TeX Gyre Adventor"),
    "zapf-chancery": ("Z003", "TeX Gyre Chorus"),
}
_CLONE_OF = {family: group for group, families in _CLONE_GROUPS.items() for family in families}


def font_group(family):
    """The family group a font belongs to: its clone group, or the first word of its
    family name ("Latin Modern Sans" -> "latin", "GentiumAlt" -> "gentium")."""
    if family in _CLONE_OF:
        return _CLONE_OF[family]
    return re.split(r"[\s_\-]|(?<=[a-z])(?=[A-Z])", family)[0].lower()


def font_split():
    """Maps each manifest index to "train" or "test", by family group.

    Groups are ordered by the SHA-256 of their name and taken into the test split until
    it holds at least `TEST_FONT_SHARE` of the fonts: deterministic, and unrelated to
    font style.
    """
    groups = {}
    for index, (_, _, _, family) in enumerate(FONTS):
        groups.setdefault(font_group(family), []).append(index)
    order = sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    split, test_count = {}, 0
    for group in order:
        side = "test" if test_count < TEST_FONT_SHARE * len(FONTS) else "train"
        test_count += len(groups[group]) if side == "test" else 0
        for index in groups[group]:
            split[index] = side
    return split


def cache_path(split, root=None):
    return Path(root or paths.data_dir()) / "letters" / f"letters-v{LETTERS_VERSION}-{split}.npz"


def load_rendered(split, root=None, log=None):
    """The rendered split, from the cache or rendered now (and cached atomically)."""
    path = cache_path(split, root)
    if path.is_file():
        with np.load(path) as data:
            return data["images"], data["labels"]
    from mtl_tf.data import sources

    sources.require("letters", root)
    if log:
        log(f"rendering letters {split} ({SPLITS[split]} images) -> {path}")
    images, labels = render(split, font_files(root))
    with paths.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)
    return images, labels


def font_files(root=None):
    """The local path of every manifest font, in manifest order."""
    from mtl_tf.data import sources

    local = {f.sha256: s.local(f, root) for s in sources.FONT_SOURCES for f in s.files}
    return [local[digest] for _, _, digest, _ in FONTS]


def render(split, font_paths, count=None):
    """Renders `count` (default: the split's size) images of `split` from `font_paths`,
    a list parallel to the manifest. Returns uint8 images N x 28 x 28, int64 labels."""
    from PIL import Image, ImageDraw, ImageFont

    count = SPLITS[split] if count is None else count
    sides = font_split()
    fonts = [i for i in range(len(FONTS)) if sides[i] == split]
    rng = np.random.default_rng(_SEEDS[split])
    per_letter = -(-count // len(LETTERS))
    glyph_cache = {}

    def glyph(font_index, letter):
        key = (font_index, letter)
        if key not in glyph_cache:
            font = ImageFont.truetype(str(font_paths[font_index]), size=96)
            canvas = Image.new("L", (256, 256), 0)
            ImageDraw.Draw(canvas).text((128, 128), letter, fill=255, font=font, anchor="mm")
            box = canvas.getbbox()
            glyph_cache[key] = canvas.crop(box) if box else None
        return glyph_cache[key]

    images = np.zeros((per_letter * len(LETTERS), _SIZE, _SIZE), np.uint8)
    labels = np.repeat(np.arange(len(LETTERS), dtype=np.int64), per_letter)
    # Columns: fill, log-aspect, rotation, shear, shift x, shift y.
    jitter = rng.uniform(-1.0, 1.0, size=(len(images), 6))
    for label, letter in enumerate(LETTERS):
        order = rng.permutation(len(fonts))
        for k in range(per_letter):
            i = label * per_letter + k
            image = glyph(fonts[order[k % len(fonts)]], letter)
            if image is not None:
                images[i] = _place(image, jitter[i])
    shuffle = rng.permutation(len(images))[:count]
    return images[shuffle], labels[shuffle]


def _place(glyph, jitter):
    """Affine-maps a cropped glyph into the 28x28 frame (rendered at 4x, then averaged)."""
    from PIL import Image

    fill, log_aspect, rotation, shear, shift_x, shift_y = jitter
    out = _SIZE * _OVERSAMPLE
    w, h = glyph.size
    scale = (0.85 + 0.08 * fill) * out / max(w, h)
    aspect = np.exp(0.1 * log_aspect)
    theta = np.deg2rad(8.0 * rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    # Forward map, glyph centre -> frame centre: rotate @ shear @ scale.
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, 0.12 * shear], [0.0, 1.0]])
    forward = forward @ np.diag([scale * aspect, scale / aspect])
    inverse = np.linalg.inv(forward)
    centre_out = np.array([out / 2 + 0.05 * out * shift_x, out / 2 + 0.05 * out * shift_y])
    offset = np.array([w / 2, h / 2]) - inverse @ centre_out
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    big = glyph.transform((out, out), Image.Transform.AFFINE, coefficients,
                          resample=Image.Resampling.BILINEAR)
    small = np.asarray(big.resize((_SIZE, _SIZE), Image.Resampling.BOX), np.float32)
    # Hairline fonts average out grey at 28x28; stretch every glyph to full contrast,
    # as NotMNIST's images are.
    peak = small.max()
    return np.rint(small * (255.0 / peak)).astype(np.uint8) if peak > 0 else small.astype(np.uint8)


def load_notmnist(split, path, seed=0):
    """60,000 training / 10,000 test images drawn disjointly from a real notMNIST
    archive or folder, as paper 000 drew them from notMNIST_large. Unreadable PNGs
    (notMNIST_large has a few) are skipped."""
    from PIL import Image

    path = Path(path).expanduser()
    entries = _notmnist_entries(path)
    if not entries:
        raise ValueError(
            f"`notmnist` names no notMNIST data: found no A/ ... J/ PNG files in "
            f"{str(path)!r}. Pass notMNIST_large.tar.gz or the folder it unpacks to."
        )
    order = np.random.default_rng(seed).permutation(len(entries))
    start = 0 if split == "train" else SPLITS["train"]
    images, labels = [], []
    for index in order[start:]:
        if len(images) == SPLITS[split]:
            break
        label, read = entries[index]
        try:
            image = np.asarray(Image.open(io.BytesIO(read())).convert("L"), np.uint8)
        except Exception:  # noqa: BLE001 - notMNIST ships corrupt PNGs; skip them
            continue
        if image.shape == (_SIZE, _SIZE):
            images.append(image)
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def _notmnist_entries(path):
    """(label, reader) for every PNG under a letter folder, sorted by name."""
    def label_of(name):
        parts = Path(name).parts
        return LETTERS.index(parts[-2]) if len(parts) >= 2 and parts[-2] in LETTERS else None

    entries = []
    if path.is_dir():
        for file in sorted(path.rglob("*.png")):
            label = label_of(str(file))
            if label is not None:
                entries.append((label, file.read_bytes))
    elif path.is_file():
        tar = tarfile.open(path)  # members are read in memory, never extracted
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            label = label_of(member.name)
            if member.isfile() and member.name.endswith(".png") and label is not None:
                entries.append((label, lambda m=member: tar.extractfile(m).read()))
    return entries
