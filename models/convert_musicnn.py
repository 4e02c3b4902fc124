#!/usr/bin/env python3
"""Convert the pretrained musicnn 0.1.0 checkpoints to safetensors for the candle port.

Usage (from the repository root; needs Python 3 with numpy and pip, no TensorFlow):

    python3 models/convert_musicnn.py [--wheel musicnn-0.1.0-py3-none-any.whl]

Without --wheel it runs `pip download --no-deps musicnn==0.1.0` into a temporary folder.
It writes models/weights/{mtt,msd}_musicnn.{safetensors,json} and LICENSE-musicnn.

The checkpoints are TensorFlow tensor bundles (V2): `.index` is a LevelDB-style table whose
values are BundleEntryProto messages, and `.data-00000-of-00001` holds the raw tensors.
Both are read here with a small reader written for this purpose.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

MODELS = {"mtt": "MTT_musicnn", "msd": "MSD_musicnn"}
SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187
# BatchNormalization default of tf.compat.v1.layers.
BN_EPS = 1e-3

# TensorFlow DataType enum values that can appear in these checkpoints.
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}

# --- minimal protobuf and LevelDB table readers ------------------------------------------


def read_varint(buf, pos):
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def proto_fields(buf):
    """Yield (field_number, wire_type, value) for each field of a serialized message."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            value = bytes(buf[pos : pos + n])
            pos += n
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def parse_bundle_entry(buf):
    """BundleEntryProto: dtype=1, shape=2 (TensorShapeProto), shard_id=3, offset=4, size=5, crc32c=6."""
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for field, _, value in proto_fields(buf):
        if field == 1:
            entry["dtype"] = value
        elif field == 2:
            for dim_field, _, dim in proto_fields(value):
                if dim_field == 2:  # TensorShapeProto.dim
                    size = 0
                    for f, _, v in proto_fields(dim):
                        if f == 1:
                            size = v
                    entry["shape"].append(size)
        elif field == 3:
            entry["shard_id"] = value
        elif field == 4:
            entry["offset"] = value
        elif field == 5:
            entry["size"] = value
        elif field == 6:
            entry["crc32c"] = value
        elif field == 7:
            raise ValueError("sliced tensors are not supported")
    return entry


def block_entries(data, offset, size):
    """Yield (key, value) from one table block (prefix-compressed keys, restart array at the end)."""
    block = data[offset : offset + size]
    compression = data[offset + size]
    if compression != 0:
        raise ValueError(f"compressed table blocks (type {compression}) are not supported")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    pos = 0
    key = b""
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, bytes(block[pos : pos + value_len])
        pos += value_len


def read_block_handle(buf, pos):
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def read_index(path):
    """Map tensor name -> BundleEntryProto fields, from a tensor-bundle `.index` table."""
    with open(path, "rb") as f:
        data = f.read()
    footer = data[-48:]
    if struct.unpack_from("<Q", footer, 40)[0] != 0xDB4775248B80FB57:
        raise ValueError(f"{path}: not a LevelDB table (bad magic)")
    _, pos = read_block_handle(footer, 0)  # metaindex, unused
    (idx_off, idx_size), _ = read_block_handle(footer, pos)
    entries = {}
    for _, handle in block_entries(data, idx_off, idx_size):
        (off, size), _ = read_block_handle(handle, 0)
        for key, value in block_entries(data, off, size):
            if key == b"":  # BundleHeaderProto
                continue
            entries[key.decode()] = parse_bundle_entry(value)
    return entries


def crc32c(data):
    table = crc32c.table
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


crc32c.table = _crc32c_table()


def masked_crc32c(data):
    # TensorFlow stores CRCs masked (rotate right by 15, add a constant) as LevelDB does.
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_checkpoint(prefix, names):
    """Read the named tensors of a checkpoint (prefix + '.index' / '.data-00000-of-00001')."""
    entries = read_index(prefix + ".index")
    with open(prefix + ".data-00000-of-00001", "rb") as f:
        data = f.read()
    tensors = {}
    for name in names:
        e = entries[name]
        if e["shard_id"] != 0:
            raise ValueError(f"{name}: tensor in shard {e['shard_id']}, expected one shard")
        raw = data[e["offset"] : e["offset"] + e["size"]]
        if e["crc32c"] is not None and masked_crc32c(raw) != e["crc32c"]:
            raise ValueError(f"{name}: CRC32C mismatch, the checkpoint is corrupt or misread")
        dtype = np.dtype(TF_DTYPES[e["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).astype(np.float32)
    return tensors, entries


# --- name mapping -------------------------------------------------------------------------

# TF1 auto-names in creation order (see musicnn/models.py): conv2d..conv2d_4 = front end,
# conv2d_5..7 = mid end, batch_normalization_N follows its conv.
FRONT = ["timbral_f74", "timbral_f77", "temporal_s1", "temporal_s2", "temporal_s3"]


def bn(tf_name):
    return {
        "weight": f"{tf_name}/gamma",
        "bias": f"{tf_name}/beta",
        "running_mean": f"{tf_name}/moving_mean",
        "running_var": f"{tf_name}/moving_variance",
    }


def tf_bn_name(i):
    return "batch_normalization" if i == 0 else f"batch_normalization_{i}"


def tf_conv_name(i):
    return "conv2d" if i == 0 else f"conv2d_{i}"


def mapping():
    """(our name, TF name, transform) for every tensor of the port."""
    m = []

    def add_bn(ours, i):
        for k, v in bn(tf_bn_name(i)).items():
            m.append((f"{ours}.{k}", v, None))

    add_bn("frontend.bn_input", 0)
    for i, block in enumerate(FRONT):
        # TF kernel [kh, kw, in, out] -> [out, in, kh, kw]
        m.append((f"frontend.{block}.conv.weight", f"{tf_conv_name(i)}/kernel", lambda k: k.transpose(3, 2, 0, 1)))
        m.append((f"frontend.{block}.conv.bias", f"{tf_conv_name(i)}/bias", None))
        add_bn(f"frontend.{block}.bn", i + 1)
    for j in range(3):
        # TF conv2d kernel [7, C, 1, 64] over a [T, C, 1] image -> conv1d [64, C, 7]
        m.append((f"midend.conv{j + 1}.weight", f"{tf_conv_name(5 + j)}/kernel", lambda k: k[:, :, 0, :].transpose(2, 1, 0)))
        m.append((f"midend.conv{j + 1}.bias", f"{tf_conv_name(5 + j)}/bias", None))
        add_bn(f"midend.bn{j + 1}", 6 + j)
    # TF flattens concat([max, mean], axis=2) of [B, 753, 1] tensors, interleaving
    # max0, mean0, max1, ...; reorder to cat([max, mean]) so the port can concatenate plainly.
    n = 753
    perm = np.concatenate([np.arange(n) * 2, np.arange(n) * 2 + 1])
    for k, v in bn(tf_bn_name(9)).items():
        m.append((f"backend.bn_pool.{k}", v, lambda t: t[perm]))
    m.append(("backend.dense.weight", "dense/kernel", lambda k: k[perm, :].T))
    m.append(("backend.dense.bias", "dense/bias", None))
    add_bn("backend.bn_dense", 10)
    m.append(("backend.output.weight", "dense_1/kernel", lambda k: k.T))
    m.append(("backend.output.bias", "dense_1/bias", None))
    return m


# --- preprocessing constants --------------------------------------------------------------


def hz_to_mel(f):
    # Slaney scale: linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    if f >= min_log_hz:
        return min_log_mel + np.log(f / min_log_hz) / logstep
    return f / f_sp


def mel_to_hz(m):
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * m
    log_t = m >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


def mel_basis():
    """Slaney-scale, Slaney-normalised triangular filters [96, 257], as librosa.filters.mel."""
    fft_freqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((N_MELS, N_FFT // 2 + 1), dtype=np.float32)
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    # librosa scales the float32 triangles by a float64 norm: same rounding here.
    weights *= (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, None]
    return weights


def hann_periodic():
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)


# --- output -------------------------------------------------------------------------------


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name], dtype="<f4")
        blob = t.tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def labels_from_configuration(source):
    """Read MTT_LABELS / MSD_LABELS from musicnn/configuration.py without importing it."""
    import ast

    labels = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("MTT_LABELS", "MSD_LABELS"):
                labels[name[:3].lower()] = ast.literal_eval(node.value)
    return labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", help="path to musicnn-0.1.0-py3-none-any.whl (downloaded if absent)")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "weights"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "musicnn==0.1.0", "-d", tmp],
                check=True,
            )
            wheel = os.path.join(tmp, "musicnn-0.1.0-py3-none-any.whl")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        pkg = os.path.join(tmp, "musicnn")
        with open(os.path.join(pkg, "configuration.py")) as f:
            labels = labels_from_configuration(f.read())
        with open(os.path.join(tmp, "musicnn-0.1.0.dist-info", "LICENSE.md")) as f:
            license_text = f.read()

        os.makedirs(args.out, exist_ok=True)
        mel = mel_basis()
        window = hann_periodic()
        for kind, folder in MODELS.items():
            table = mapping()
            ckpt, entries = read_checkpoint(os.path.join(pkg, folder, ""), [tf for _, tf, _ in table])
            out = {}
            for ours, tf_name, transform in table:
                t = ckpt[tf_name]
                out[ours] = transform(t) if transform is not None else t
            # Every trainable or BN tensor must be used; only optimizer state may be left out.
            skipped = [
                n for n in entries if n not in ckpt and not n.endswith(("/Adam", "/Adam_1")) and "power" not in n
            ]
            if skipped:
                raise ValueError(f"{folder}: unmapped checkpoint tensors {skipped}")
            out["preprocess.mel_basis"] = mel
            out["preprocess.window"] = window
            n_weights = sum(v.size for k, v in out.items() if not k.startswith("preprocess."))
            write_safetensors(os.path.join(args.out, f"{kind}_musicnn.safetensors"), out)
            meta = {
                "model": f"{folder}",
                "labels": labels[kind],
                "preprocess": {
                    "sample_rate": SAMPLE_RATE,
                    "n_fft": N_FFT,
                    "hop": HOP,
                    "n_mels": N_MELS,
                    "patch_frames": PATCH_FRAMES,
                    "window": "hann (periodic), centred frames, 256 zeros padded on each side",
                    "log": "log10(10000 * float16(mel) + 1)",
                },
                "batch_norm_eps": BN_EPS,
                "n_weights": int(n_weights),
                "source": {
                    "package": "musicnn",
                    "version": "0.1.0",
                    "checkpoint": f"musicnn/{folder}/",
                    "license": "ISC",
                    "copyright": "Music Technology Group, Universitat Pompeu Fabra 2019",
                },
            }
            with open(os.path.join(args.out, f"{kind}_musicnn.json"), "w") as f:
                json.dump(meta, f, indent=1)
                f.write("\n")
            print(f"{folder}: {len(table)} tensors, {n_weights} numbers")
        with open(os.path.join(args.out, "LICENSE-musicnn"), "w") as f:
            f.write(license_text)


if __name__ == "__main__":
    main()
