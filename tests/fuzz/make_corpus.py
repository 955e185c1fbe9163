#!/usr/bin/env python3
"""make_corpus.py SRC_ROOT OUT [BIN_DIR] - write the seed corpora of tests/fuzz.

Seeds are small valid and near-valid inputs for each harness, derived from
tests/fixtures and hand-written variants (each seed is a few KB at most). With BIN_DIR
(a build's bin folder with reap-genmodel and reap-scorer), the safetensors, config and
calibration seeds also include what the generator writes and the store_import seeds a
real export file. The image seeds need Pillow (a venv with it, e.g. the one
tests/image_compare.py makes); without it they are left as committed. Signed seeds are made with the stock `minisign` and the harnesses'
throwaway key (tests/fuzz/seed-signing.key, unencrypted). Deterministic apart from
the generator's export (which holds a timestamp) and minisign's signatures.

Usage (regenerate the committed corpora):
  python3 tests/fuzz/make_corpus.py . tests/fuzz/corpus build/bin
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

SRC, OUT = sys.argv[1], sys.argv[2]
BIN = sys.argv[3] if len(sys.argv) > 3 else None
FIX = os.path.join(SRC, "tests", "fixtures")
KEY = os.path.join(SRC, "tests", "fuzz", "seed-signing.key")
SIGNED_TEXT = b"reap fuzz\n"          # fuzz_keys.h FUZZ_SIGNED_TEXT


def put(name, fname, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


# ---- safetensors ------------------------------------------------------------------
def st_file(tensors, meta=None, pad=0, extra=b""):
    hdr, blobs, off = {}, b"", 0
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dtype, shape, blob in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs += blob
        off += len(blob)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8 + pad)
    return struct.pack("<Q", len(h)) + h + blobs + extra


def safetensors():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    put("safetensors", "two", st_file([("a.weight", "F32", [2, 2], f32),
                                       ("b", "BF16", [3], b"\x80?\x00@\x40@")],
                                      {"format": "pt"}))
    put("safetensors", "scalar", st_file([("s", "I64", [], b"\x07" + b"\x00" * 7)]))
    put("safetensors", "empty-tensor", st_file([("z", "U8", [0, 5], b"")]))
    put("safetensors", "all-dtypes", st_file(
        [("t%d" % i, d, [2], b"\x01" * (2 * w))
         for i, (d, w) in enumerate([("BOOL", 1), ("U8", 1), ("I8", 1), ("F8_E5M2", 1),
                                     ("F8_E4M3", 1), ("I16", 2), ("U16", 2), ("F16", 2),
                                     ("I32", 4), ("U32", 4), ("F64", 8), ("U64", 8)])]))
    put("safetensors", "no-tensors", st_file([], {"format": "pt"}))
    # Near-valid: a hole, trailing bytes, a bad dtype, overlapping offsets.
    put("safetensors", "trailing", st_file([("a", "F32", [1], f32[:4])], extra=b"xx"))
    bad = st_file([("a", "F32", [2], f32[:8])]).replace(b"F32", b"F33")
    put("safetensors", "bad-dtype", bad)
    h = b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},' \
        b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}'
    put("safetensors", "overlap", struct.pack("<Q", len(h)) + h + b"abc")
    put("safetensors", "short-header", struct.pack("<Q", 100) + b"{}")


# ---- config.json ------------------------------------------------------------------
def configs():
    with open(os.path.join(FIX, "qwen3-vl-235b-a22b-awq", "config.json"), "rb") as f:
        vl = f.read()
    put("config", "qwen3-vl-235b-awq", vl)
    moe = {"model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 3,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
           "vocab_size": 128, "num_experts": 8, "num_experts_per_tok": 2,
           "moe_intermediate_size": 32, "intermediate_size": 64, "norm_topk_prob": True,
           "decoder_sparse_step": 2, "mlp_only_layers": [0], "rms_norm_eps": 1e-6,
           "rope_theta": 10000, "tie_word_embeddings": False}
    put("config", "qwen3-moe", json.dumps(moe, indent=1))
    m2 = dict(moe, num_local_experts=8, rope_parameters={"rope_theta": 1e6})
    del m2["num_experts"], m2["rope_theta"]
    put("config", "qwen3-moe-newer-names", json.dumps(m2))
    awq = dict(moe, quantization_config={"quant_method": "awq", "w_bit": 4,
                                         "q_group_size": 32, "zero_point": True,
                                         "version": "GEMM",
                                         "modules_to_not_convert": None})
    put("config", "awq-alt-names", json.dumps(awq))
    put("config", "gptq", json.dumps(dict(moe, quantization_config={"quant_method": "gptq",
                                                                    "bits": 4})))
    put("config", "bad-heads", json.dumps(dict(moe, num_key_value_heads=3)))
    put("config", "wrong-type", json.dumps(dict(moe, hidden_size="64")))


# ---- tokenizer.json ---------------------------------------------------------------
def byte_chars():
    """The byte-level alphabet: byte b -> its character (GPT-2's bytes_to_unicode)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    m, k = {}, 0
    for b in range(256):
        if b in keep:
            m[b] = chr(b)
        else:
            m[b] = chr(256 + k)
            k += 1
    return m


BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
      "use_regex": True}


def tokenizer(vocab_extra=(), merges=(), normalizer=None, pre=BL, added=(), head=()):
    bc = byte_chars()
    vocab = dict(head)
    for b in range(256):
        vocab[bc[b]] = b
    for k, v in vocab_extra:
        vocab[k] = v
    return json.dumps({"version": "1.0", "added_tokens": list(added),
                       "normalizer": normalizer, "pre_tokenizer": pre,
                       "model": {"type": "BPE", "dropout": None, "ignore_merges": False,
                                 "vocab": vocab, "merges": list(merges)}},
                      ensure_ascii=False)


def added(i, content, normalized=False, special=True, **kw):
    d = {"id": i, "content": content, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": normalized, "special": special}
    d.update(kw)
    return d


def tokenizers():
    bc = byte_chars()
    sp = bc[ord(" ")]
    put("tokenizer", "bytes-only", tokenizer())
    put("tokenizer", "merges", tokenizer(
        [("he", 256), ("ll", 257), ("hell", 258), ("hello", 259), (sp + "w", 260)],
        ["h e", "l l", "he ll", "hell o", [sp, "w"]]))
    put("tokenizer", "added-nfc-split", tokenizer(
        [("ab", 256)], ["a b"],
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]},
        pre={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated",
             "invert": False}, BL]},
        added=[added(300, "<|im_start|>"), added(301, "<|im_end|>"),
               added(302, "word", normalized=True, special=False, single_word=True,
                     lstrip=True, rstrip=True)]))
    put("tokenizer", "split-behaviours", tokenizer(pre={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\s+|\\w+"}, "behavior": "Contiguous",
         "invert": True}, BL]}, normalizer={"type": "NFKC"}))
    # Defect 8: the empty string as the first vocabulary key and as a merge.
    put("tokenizer", "empty-first-key", tokenizer(head=[("", 256)], merges=[["", ""]]))
    # With a text to encode after a NUL byte.
    put("tokenizer", "merges-with-text",
        tokenizer([("he", 256), ("ll", 257)], ["h e", "l l"]).encode() +
        b"\0hello  world 123 \xc3\xa9\xe4\xbd\xa0")
    put("tokenizer", "unigram", tokenizer().replace('"BPE"', '"Unigram"'))
    src = os.path.join(FIX, "tok-synth", "gpt2style.json")
    if os.path.exists(src):
        shutil.copyfile(src, os.path.join(OUT, "tokenizer", "gpt2style"))


# ---- calibration ------------------------------------------------------------------
def calib():
    put("calib", "input-ids.jsonl", '{"input_ids": [1, 2, 3]}\n\n{"input_ids": [4]}\n')
    put("calib", "text.jsonl", '{"text": "Hello world"}\n{"text": "\\u4f60\\u597d 42"}\n')
    put("calib", "messages.jsonl", json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "tool", "content": "{}"}]}) + "\n")
    put("calib", "array.json", '[{"input_ids": [5, 6]}, {"text": "x"}, '
                              '{"messages": [{"role": "user", "content": "q"}]}]')
    put("calib", "mixed-keys.jsonl", '{"text": "a", "input_ids": [9], "extra": 1}\n')
    put("calib", "bad-role.jsonl", '{"messages": [{"role": "robot", "content": "x"}]}\n')
    put("calib", "bad-id.jsonl", '{"input_ids": [-1]}\n{"input_ids": [99999999]}\n')
    put("calib", "not-object.jsonl", '[1, 2]\n"text"\n')


# ---- minisign ---------------------------------------------------------------------
def minisign_sign(path, comment):
    subprocess.run(["minisign", "-S", "-s", KEY, "-m", path, "-t", comment], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    with open(path + ".minisig", "rb") as f:
        return f.read()


def pub_b64():
    with open(os.path.join(SRC, "tests", "fuzz", "fuzz_keys.h")) as f:
        for line in f:
            if line.startswith("#define FUZZ_PUB_B64"):
                return line.split('"')[1]
    raise SystemExit("no FUZZ_PUB_B64 in fuzz_keys.h")


def minisign_seeds(tmp):
    pk = pub_b64()
    put("minisign", "pub-file", b"\0untrusted comment: minisign public key\n" +
        pk.encode() + b"\n")
    put("minisign", "pub-string", b"\1" + pk.encode())
    signed = os.path.join(tmp, "signed.bin")
    with open(signed, "wb") as f:
        f.write(SIGNED_TEXT)
    sig = minisign_sign(signed, "reap-fuzz trusted comment")
    put("minisign", "signature", b"\2" + sig)
    put("minisign", "signature-bad-comment",
        b"\2" + sig.replace(b"reap-fuzz trusted", b"reap-fuzz changed"))
    with open(KEY, "rb") as f:
        put("minisign", "secret-key-file", b"\3" + f.read())


# ---- manifest ---------------------------------------------------------------------
FILES = {"a.bin": b"alpha\n", "b.bin": b"beta\n"}   # fuzz_manifest.c


def manifest_seeds(tmp):
    files = [{"path": p, "size": len(d), "blake2b_256": hashlib.blake2b(d, digest_size=32)
              .hexdigest(), "sha256": hashlib.sha256(d).hexdigest()}
             for p, d in sorted(FILES.items())]
    doc = {"format": "reap-manifest/1", "files": files,
           "inputs": {"model_id": None, "files": [], "calibration_ids": [],
                      "stats_digest": None},
           "parameters": {"criterion": "reap", "ratio": 0.5, "keep_sets": {"1": [0, 2]}},
           "software": {"name": "reap", "version": "0.1.0", "backend": "cpu"},
           "created": "2026-01-01T00:00:00Z"}
    man = json.dumps(doc, indent=2).encode()
    put("manifest", "valid", man)
    path = os.path.join(tmp, "reap-manifest.json")
    with open(path, "wb") as f:
        f.write(man)
    digest = hashlib.blake2b(man, digest_size=32).hexdigest()
    sig = minisign_sign(path, "reap-manifest model_id=none manifest_blake2b256=%s "
                              "timestamp=0" % digest)
    put("manifest", "valid-signed", man + b"\0" + sig)
    put("manifest", "signed-other-digest",
        man + b"\0" + minisign_sign(path, "reap-manifest model_id=none "
                                          "manifest_blake2b256=00 timestamp=0"))
    bad = json.loads(man)
    bad["files"][0]["size"] = 7
    bad["files"].append({"path": "../etc", "size": 1, "blake2b_256": "", "sha256": ""})
    bad["files"].append(dict(files[1]))
    put("manifest", "problems", json.dumps(bad))
    put("manifest", "missing-file", json.dumps({"files": files[:1] + [dict(files[0],
                                                                           path="c.bin")]}))


# ---- generator and store seeds ----------------------------------------------------
def varint(b, i):
    v, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def fields(b):
    """(field number, value) of a protobuf message (varint and length-delimited only)."""
    i = 0
    while i < len(b):
        tag, i = varint(b, i)
        if tag & 7 == 0:
            v, i = varint(b, i)
        else:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        yield tag >> 3, v


def export_records(data):
    """The records form of fuzz_store_import.c: db - 1, key, u16 BE value length, value."""
    out, off = b"", 8
    while off < len(data):
        n = struct.unpack(">I", data[off:off + 4])[0]
        frame = data[off + 4:off + 4 + n]
        off += 4 + n
        for num, rec in fields(frame):
            if num != 2:
                continue
            r = dict(fields(rec))
            out += bytes([r.get(1, 0) - 1]) + r.get(2, b"") + \
                struct.pack(">H", len(r.get(3, b""))) + r.get(3, b"")
    return out


def generated(tmp):
    m = os.path.join(tmp, "m")
    subprocess.run([os.path.join(BIN, "reap-genmodel"), "--out", m, "--layers", "2",
                    "--hidden", "16", "--heads", "2", "--kv-heads", "1", "--head-dim", "8",
                    "--experts", "4", "--top-k", "2", "--moe-inter", "8", "--inter", "16",
                    "--vocab", "32", "--dtype", "f32", "--calib",
                    os.path.join(tmp, "c.jsonl"), "--samples", "2", "--min-len", "3",
                    "--max-len", "5", "--seed", "5"], check=True, stdout=subprocess.DEVNULL)
    shutil.copyfile(os.path.join(m, "config.json"), os.path.join(OUT, "config", "genmodel"))
    shutil.copyfile(os.path.join(tmp, "c.jsonl"), os.path.join(OUT, "calib", "genmodel.jsonl"))
    shards = sorted(p for p in os.listdir(m) if p.endswith(".safetensors"))
    shutil.copyfile(os.path.join(m, shards[0]), os.path.join(OUT, "safetensors", "genmodel"))
    st = os.path.join(tmp, "st")
    scorer = os.path.join(BIN, "reap-scorer")
    subprocess.run([scorer, "run", "--quiet", "--backend", "cpu", "--model", m, "--calib",
                    os.path.join(tmp, "c.jsonl"), "--store", st], check=True,
                   stdout=subprocess.DEVNULL)
    out = os.path.join(tmp, "x.reapx")
    subprocess.run([scorer, "export", "--store", st, "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out, "rb") as f:
        data = f.read()
    put("store_import", "export", data)
    put("store_import", "truncated", data[:len(data) // 2])
    put("store_import", "magic-only", data[:8])
    put("store_import", "records", export_records(data))
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 1
    put("store_import", "flipped-byte", bytes(flipped))


# ---- images (fuzz_image: first byte 0 = preprocessor_config.json, else an image) -----
def image_seeds():
    try:
        import io
        from PIL import Image
    except ImportError:
        print("make_corpus: no Pillow here: image seeds left as they are")
        return
    px = bytes((x * 37 + y * 11) % 256 for y in range(12) for x in range(17 * 3))
    rgb = Image.frombytes("RGB", (17, 12), px)

    def enc(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()
    seeds = {
        "rgb.png": enc(rgb, "PNG"),
        "rgba.png": enc(rgb.convert("RGBA"), "PNG"),
        "palette-trns.png": enc(rgb.convert("P"), "PNG", transparency=1),
        "gray16.png": enc(rgb.convert("L").convert("I;16"), "PNG"),
        "bw.png": enc(rgb.convert("1"), "PNG"),
        "baseline.jpg": enc(rgb, "JPEG", quality=75),
        "progressive.jpg": enc(rgb, "JPEG", quality=75, progressive=True),
        "gray.jpg": enc(rgb.convert("L"), "JPEG"),
        "lossy.webp": enc(rgb, "WEBP", quality=50),
        "lossless-alpha.webp": enc(rgb.convert("RGBA"), "WEBP", lossless=True),
    }
    ex = Image.Exif()
    ex[0x0112] = 6
    seeds["exif-orient6.jpg"] = enc(rgb, "JPEG", exif=ex)
    ex[0x0112] = 8
    seeds["exif-orient8.png"] = enc(rgb, "PNG", exif=ex)
    seeds["exif-orient8.webp"] = enc(rgb, "WEBP", exif=ex, lossless=True)
    for name, data in seeds.items():
        put("image", name, b"\x01" + data)
    put("image", "truncated.png", b"\x01" + seeds["rgb.png"][:60])
    put("image", "truncated.jpg", b"\x01" + seeds["baseline.jpg"][:200])
    put("image", "preprocessor_config.json", b"\x00" + json.dumps(
        {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
         "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
         "image_std": [0.5, 0.5, 0.5], "min_pixels": 3136, "max_pixels": 451584}).encode())


def main():
    image_seeds()
    with tempfile.TemporaryDirectory() as tmp:
        safetensors()
        configs()
        tokenizers()
        calib()
        minisign_seeds(tmp)
        manifest_seeds(tmp)
        put("store_import", "junk", b"REAPEXP1\x00\x00\x00\x05hello")
        if BIN:
            generated(tmp)


main()
