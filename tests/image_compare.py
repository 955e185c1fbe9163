#!/usr/bin/python3
"""image_compare.py - the C image preprocessing against Pillow and transformers (ctest image_compare).

    image_compare.py --dump BUILD/tests/image-dump --work DIR

Installs pinned Pillow and transformers from PyPI into a venv under DIR and re-runs itself
there (PyPI unreachable: prints SKIPPED, exits 77). Then generates images of awkward
sizes, aspect ratios and modes with Pillow (and one 16-bit RGB PNG written by hand), and
for each image and each preprocessor config checks, against what the C code dumps:

  decoded   np.array(ImageOps.exif_transpose(Image.open(f)).convert("RGB")), the image
            as transformers' load_image reads a file: every byte equal;
  probe     the header-only width/height equal the decoded size;
  resized   smart_resize of transformers, then Pillow's resize(BICUBIC): every byte equal;
  grid      Qwen2VLImageProcessor (the slow, Pillow-based one)'s image_grid_thw equal;
  pixels    its pixel_values: the maximum absolute difference (printed; must be 0 up to
            float32 rounding, 1e-6).

An image Pillow cannot load (cut short) or the processor refuses (aspect ratio > 200) must
be refused by the C code too.
Exits 0 when all pass, 1 on a failure.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import zlib

PIP_PKGS = ["pillow==11.3.0", "transformers==4.57.1", "numpy==2.4.6"]
STAMP = "image-compare-tools-" + "-".join(PIP_PKGS)


def ensure_venv(work):
    """WORK/venv with the pinned packages; its python, or None (PyPI unreachable)."""
    venv = os.path.join(work, "venv")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, STAMP)
    if os.path.exists(stamp):
        return py
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "pip.log"), "w") as log:
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True,
                           stdout=log, stderr=log)
            subprocess.run([py, "-m", "pip", "install", "--quiet", "--timeout", "30",
                            "--retries", "1"] + PIP_PKGS, check=True, stdout=log, stderr=log,
                           timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            return None
    open(stamp, "w").close()
    return py


def png16_rgb(path, arr):
    """A 16-bit RGB PNG (Pillow cannot write one): arr uint16 [h, w, 3]."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def make_images(d):
    """The test images: name -> path."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(14)

    def photo(w, h, ch=3):
        # smooth gradients plus noise: both the flat and the busy cases of the filter
        y, x = np.mgrid[0:h, 0:w]
        base = [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256]
        a = np.stack([base[i % 3] for i in range(ch)], axis=-1).astype(np.int32)
        a += rng.integers(-40, 41, size=a.shape)
        return np.clip(a, 0, 255).astype(np.uint8)

    out = {}

    def save(name, img, **kw):
        p = os.path.join(d, name)
        img.save(p, **kw)
        out[name] = p

    save("1x1.png", Image.fromarray(photo(1, 1)))
    save("33x1000.png", Image.fromarray(photo(33, 1000)))
    save("999x17.png", Image.fromarray(photo(999, 17)))
    save("4000x3000.jpg", Image.fromarray(photo(4000, 3000)), quality=90)
    save("513x257-444.jpg", Image.fromarray(photo(513, 257)), quality=95, subsampling=0)
    save("301x199-progressive.jpg", Image.fromarray(photo(301, 199)), quality=80,
         progressive=True)
    save("gray-250x181.jpg", Image.fromarray(photo(250, 181, 1)[:, :, 0], "L"), quality=85)
    save("rgba-301x203.png", Image.fromarray(photo(301, 203, 4), "RGBA"))
    save("la-97x64.png", Image.fromarray(photo(97, 64, 2), "LA"))
    save("gray-77x450.png", Image.fromarray(photo(77, 450, 1)[:, :, 0], "L"))
    save("bw-65x33.png", Image.fromarray(photo(65, 33, 1)[:, :, 0], "L").convert("1"))
    pal = Image.fromarray(photo(157, 211)).convert("P", palette=Image.Palette.ADAPTIVE,
                                                     colors=200)
    save("palette-157x211.png", pal, transparency=3)
    g16 = (photo(120, 90, 1)[:, :, 0].astype(np.uint16) * 5).astype(np.uint16)
    save("gray16-120x90.png", Image.fromarray(g16, "I;16"))
    p = os.path.join(d, "rgb16-61x47.png")
    png16_rgb(p, rng.integers(0, 65536, size=(47, 61, 3), dtype=np.uint16))
    out["rgb16-61x47.png"] = p
    save("lossy-250x130.webp", Image.fromarray(photo(250, 130)), quality=80)
    save("lossless-rgba-64x300.webp", Image.fromarray(photo(64, 300, 4)), lossless=True)
    save("aspect-1x250.png", Image.fromarray(photo(1, 250)))
    save("lossy-rgba-97x61.webp", Image.fromarray(photo(97, 61, 4)), quality=70)
    # EXIF orientations 2..8 (turned upright by transformers' load_image), in each format
    for o, ext in ((2, "jpg"), (3, "png"), (4, "webp"), (5, "jpg"), (6, "jpg"), (7, "png"),
                   (8, "webp")):
        ex = Image.Exif()
        ex[0x0112] = o
        save("orient%d-75x41.%s" % (o, ext), Image.fromarray(photo(75, 41)), exif=ex)
    # cut files: JPEGs without their EOI marker (Pillow refuses these two; it loads
    # some others of the kind, which the C code refuses), a PNG cut in its image data
    for name, src in (("no-eoi-baseline.jpg", "513x257-444.jpg"),
                      ("no-eoi-progressive.jpg", "301x199-progressive.jpg"),
                      ("cut-half.png", "rgba-301x203.png")):
        with open(out[src], "rb") as f:
            data = f.read()
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data[:-2] if name.endswith(".jpg") else data[:len(data) // 2])
        out[name] = p
    # a size whose smart_resize hits a half: 80/32 = 2.5 rounds to 2 (to even), not 3
    save("half-even-80x144.png", Image.fromarray(photo(80, 144)))
    return out


CONFIGS = {
    # Qwen3-VL's own preprocessor_config.json
    "qwen3vl": {"size": {"shortest_edge": 65536, "longest_edge": 16777216},
                "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    # a calibration cap (672 x 672) given as min/max_pixels, which win over size
    "capped": {"size": {"shortest_edge": 65536, "longest_edge": 16777216},
               "min_pixels": 3136, "max_pixels": 451584,
               "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
               "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    # Qwen2-VL: patch 14, the processor's defaults (CLIP mean/std) otherwise
    "qwen2vl": {"patch_size": 14, "max_pixels": 200704},
}


def run(args):
    import numpy as np
    import PIL
    import transformers
    from PIL import Image, ImageOps
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    print("Pillow %s, transformers %s, numpy %s" % (PIL.__version__, transformers.__version__,
                                                    np.__version__))
    d = os.path.join(args.work, "images")
    os.makedirs(d, exist_ok=True)
    images = make_images(d)
    fails = []
    worst = 0.0
    checked = 0
    for cname, cfg in CONFIGS.items():
        cpath = os.path.join(args.work, cname + ".json")
        with open(cpath, "w") as f:
            json.dump(cfg, f)
        proc = Qwen2VLImageProcessor(**cfg)
        factor = proc.patch_size * proc.merge_size
        # The pixel bounds as the config means them ("min_pixels"/"max_pixels" over
        # "size"). Given to each call: transformers 4.57's slow processor drops a valid
        # "size" in __init__ (it keeps its defaults), the fast one and 5.x honour it.
        size = dict(cfg.get("size", {"shortest_edge": 3136, "longest_edge": 1003520}))
        size["shortest_edge"] = cfg.get("min_pixels", size["shortest_edge"])
        size["longest_edge"] = cfg.get("max_pixels", size["longest_edge"])
        for name, path in images.items():
            if cname == "qwen3vl" and name.startswith("4000x3000"):
                continue  # 16M pixels uncapped: slow in Python, the capped case covers it
            label = "%s/%s" % (cname, name)
            prefix = os.path.join(args.work, "%s-%s" % (cname, name))
            c = subprocess.run([args.dump, cpath, path, prefix], capture_output=True, text=True)
            pil = Image.open(path)
            try:
                pil.load()
                # as transformers' load_image reads a file: EXIF orientation applied
                pil = ImageOps.exif_transpose(pil)
            except OSError as e:
                if c.returncode == 2:
                    print("ok   %-36s refused by both (%s)" % (label, c.stderr.strip()))
                    checked += 1
                else:
                    fails.append("%s: Pillow refuses it (%s), the C code gave rc %d" %
                                 (label, e, c.returncode))
                continue
            try:
                # channels_last said outright: transformers guesses channels-first for a
                # 1x1 (or 3-pixel-high) image.
                ref = proc.preprocess(pil, size=size, input_data_format="channels_last",
                                      return_tensors="np")
            except ValueError as e:
                if c.returncode == 2 and "aspect ratio" in c.stderr:
                    print("ok   %-36s refused by both (%s)" % (label, c.stderr.strip()))
                    checked += 1
                else:
                    fails.append("%s: the processor refuses (%s), the C code gave rc %d" %
                                 (label, e, c.returncode))
                continue
            if c.returncode != 0:
                fails.append("%s: image-dump failed: %s" % (label, c.stderr.strip()))
                continue
            w, h, pw, ph, rw, rh, gt, gh, gw = map(int, c.stdout.split())
            rgb = np.array(pil.convert("RGB"))
            dec = np.fromfile(prefix + ".decoded", dtype=np.uint8)
            if rgb.shape != (h, w, 3) or not np.array_equal(dec.reshape(h, w, 3), rgb):
                diff = "shape" if rgb.shape != (h, w, 3) else \
                    "%d bytes" % int((dec.reshape(h, w, 3) != rgb).sum())
                fails.append("%s: decoded RGB differs from Pillow's (%s)" % (label, diff))
                continue
            if (pw, ph) != (w, h):
                fails.append("%s: probe says %dx%d, decode %dx%d" % (label, pw, ph, w, h))
            eh, ew = smart_resize(h, w, factor=factor, min_pixels=size["shortest_edge"],
                                  max_pixels=size["longest_edge"])
            if (rh, rw) != (eh, ew):
                fails.append("%s: resized to %dx%d, smart_resize says %dx%d" %
                             (label, rw, rh, ew, eh))
                continue
            want = np.array(pil.convert("RGB").resize((ew, eh), Image.BICUBIC))
            got = np.fromfile(prefix + ".resized", dtype=np.uint8).reshape(rh, rw, 3)
            nbad = int((got != want).sum())
            if nbad:
                fails.append("%s: %d of %d resized bytes differ from Pillow's BICUBIC "
                             "(max %d)" % (label, nbad, got.size,
                                           int(np.abs(got.astype(int) - want).max())))
            grid = [int(v) for v in ref["image_grid_thw"][0]]
            if grid != [gt, gh, gw]:
                fails.append("%s: grid %s, processor %s" % (label, [gt, gh, gw], grid))
                continue
            pv = ref["pixel_values"]
            mine = np.fromfile(prefix + ".patches", dtype=np.float32).reshape(pv.shape)
            dmax = float(np.abs(mine.astype(np.float64) - pv.astype(np.float64)).max())
            worst = max(worst, dmax)
            if dmax > 1e-6:
                fails.append("%s: pixel_values differ by up to %g" % (label, dmax))
            checked += 1
            print("ok   %-36s %4dx%-4d -> %4dx%-4d grid %s  resized bytes equal: %s  "
                  "max |pixel_values diff| %g" % (label, w, h, rw, rh, grid, nbad == 0, dmax))
    for f in fails:
        print("FAIL: " + f)
    print("%d image/config pairs checked; largest pixel_values difference %g" %
          (checked, worst))
    print("image_compare: %d failure(s)" % len(fails))
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--in-venv", action="store_true")
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)
    args.dump = os.path.abspath(args.dump)
    if not args.in_venv:
        py = ensure_venv(args.work)
        if not py:
            print("SKIPPED: Pillow/transformers could not be installed from PyPI "
                  "(see %s)" % os.path.join(args.work, "pip.log"))
            return 77
        return subprocess.call([py, os.path.abspath(__file__), "--in-venv",
                                "--dump", args.dump, "--work", args.work])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
