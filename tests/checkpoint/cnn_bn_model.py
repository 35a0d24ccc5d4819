"""cnn_bn_model.py SRC DST: writes DST, the MNIST CNN of SRC (safetensors,
F32: conv1, conv2, fc1) with batch norms added, for the checkpoint tests:
bn1 after conv1, which loses its bias (folded into a conv without a bias
tensor), bn2 after conv2's ReLU (stays a separate op), bn3 after fc1
(folded into a linear with a bias). Statistics are deterministic and mild,
so the network still classifies. Python standard library only."""
import json
import struct
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    hdr = json.loads(blob[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        tensors[name] = (t["shape"], blob[base + a:base + b])
    del tensors["conv1.bias"]
    seed = [12345]

    def rnd(lo, hi):
        seed[0] = (seed[0] * 1103515245 + 12345) % (1 << 31)
        return lo + (hi - lo) * seed[0] / float(1 << 31)

    for bn, c in (("bn1", 8), ("bn2", 16), ("bn3", 10)):
        vals = {"weight": [rnd(0.7, 1.3) for _ in range(c)],
                "bias": [rnd(-0.2, 0.2) for _ in range(c)],
                "running_mean": [rnd(-0.2, 0.2) for _ in range(c)],
                "running_var": [rnd(0.6, 1.4) for _ in range(c)]}
        for k, v in vals.items():
            tensors["%s.%s" % (bn, k)] = ([c], struct.pack("<%df" % c, *v))
    out, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, (shape, raw) in tensors.items():
        out[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    text = json.dumps(out).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


main()
