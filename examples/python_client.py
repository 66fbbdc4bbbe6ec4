#!/usr/bin/env python3
"""A federation client in Python over the C ABI (libfl_client.so through ctypes).

Trains softmax (multinomial logistic) regression with numpy on a shard of Fashion-MNIST,
with the layout of the SDK's "logreg" model (fc.weight [10, 784], fc.bias [10]), so it
federates with fl-client --model logreg and examples/c_client.c:

    fl-sim export-model --model logreg --seed 1 --out logreg.flps
    fl-server --init-model logreg.flps --tls-cert server.pem --tls-key server.key ...
    python3 examples/python_client.py --server localhost:50051 --tls-ca ca.pem \\
        --enrollment-token T --name py-0 --partition-index 0 --num-partitions 3

The library: --library PATH, else $FL_CLIENT_LIBRARY, else the build tree next to this
script (build/packaging/libfl_client.so.0), else the system's libfl_client.so.0.

Shard: the first --train-examples training images (0 = all) are dealt round-robin into
--num-partitions shards; shard i holds examples i, i + n, i + 2n, ... (as c_client.c).
Pixels are scaled as the LibTorch trainers scale them: (x / 255 - 0.2860) / 0.3530.

Output ends with
    global accuracy: initial 0.1000 final 0.7512
"initial": test accuracy of the global model received with the first task, before training
on it; "final": that of the global model downloaded after the federation finished.

Exit status: 0 when the federation finished (or on SIGINT/SIGTERM), 2 for a bad command
line, 1 for any other failure.
"""

import argparse
import ctypes
import gzip
import math
import os
import signal
import struct
import sys
import threading
import traceback

import numpy as np

PROGRAM = "python_client.py"
EXIT_FAILURE = 1
EXIT_USAGE = 2

CLASSES = 10
PIXELS = 28 * 28
NUM_PARAMETERS = CLASSES * PIXELS + CLASSES
# Fashion-MNIST's pixel statistics after scaling to [0, 1] (sdk/torch/torch_trainer.cc).
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530
# Fashion-MNIST holds 60,000 training images; refuse headers that promise absurd sizes.
MAX_IMAGES = 1_000_000
# Bounds on what the server may ask of one task (a larger request is a misconfiguration).
MAX_BATCH = 1 << 16
MAX_STEPS = 100_000_000

# fl/fl_client.h status codes used here.
FL_OK = 0
FL_ECANCELLED = 1
FL_EINVALID_ARGUMENT = 3
FL_EINTERNAL = 13
MESSAGE_BYTES = 256  # the callbacks' message buffer, NUL included


# ---- the C ABI, declared as fl/fl_client.h declares it ----

class TrainConfig(ctypes.Structure):
    _fields_ = [("local_epochs", ctypes.c_int32), ("local_steps", ctypes.c_int32),
                ("batch_size", ctypes.c_int32), ("lr", ctypes.c_double),
                ("momentum", ctypes.c_double), ("weight_decay", ctypes.c_double),
                ("prox_mu", ctypes.c_double), ("seed", ctypes.c_uint64),
                ("round", ctypes.c_uint64)]


class TrainResult(ctypes.Structure):
    _fields_ = [("num_examples", ctypes.c_uint64), ("dataset_size", ctypes.c_uint64),
                ("mean_loss", ctypes.c_double)]


class EvalResult(ctypes.Structure):
    _fields_ = [("num_examples", ctypes.c_uint64), ("loss", ctypes.c_double),
                ("accuracy", ctypes.c_double)]


GET_PARAMETERS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                  ctypes.c_size_t, ctypes.c_void_p)
SET_PARAMETERS = GET_PARAMETERS  # the same C signature (const float* is float* to ctypes)
TRAIN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(TrainConfig),
                         ctypes.POINTER(TrainResult), ctypes.c_void_p)
EVALUATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(EvalResult),
                            ctypes.c_void_p)
TASK_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                                 ctypes.POINTER(TrainResult))


class Trainer(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_void_p), ("get_parameters", GET_PARAMETERS),
                ("set_parameters", SET_PARAMETERS), ("train", TRAIN), ("evaluate", EVALUATE)]


def load_library(path):
    lib = ctypes.CDLL(path)
    c_int, c_char_p, c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
    signatures = {
        "fl_last_error": (c_char_p, []),
        "fl_version": (c_char_p, []),
        "fl_client_options_new": (c_void_p, []),
        "fl_client_options_free": (None, [c_void_p]),
        "fl_client_options_set_server": (c_int, [c_void_p, c_char_p]),
        "fl_client_options_set_tls_ca_file": (c_int, [c_void_p, c_char_p]),
        "fl_client_options_set_tls_client_cert": (c_int, [c_void_p, c_char_p, c_char_p]),
        "fl_client_options_set_insecure": (c_int, [c_void_p, c_int]),
        "fl_client_options_set_enrollment_token": (c_int, [c_void_p, c_char_p]),
        "fl_client_options_set_name": (c_int, [c_void_p, c_char_p]),
        "fl_client_options_set_poll_wait_ms": (c_int, [c_void_p, ctypes.c_int64]),
        "fl_client_create": (c_int, [c_void_p, ctypes.POINTER(c_void_p)]),
        "fl_client_free": (None, [c_void_p]),
        "fl_client_add_tensor": (c_int, [c_void_p, c_char_p, ctypes.POINTER(ctypes.c_int64),
                                         ctypes.c_size_t]),
        "fl_client_num_parameters": (ctypes.c_size_t, [c_void_p]),
        "fl_client_set_task_callback": (c_int, [c_void_p, TASK_CALLBACK, c_void_p]),
        "fl_client_run": (c_int, [c_void_p, ctypes.POINTER(Trainer), ctypes.c_uint64]),
        "fl_client_cancel": (None, [c_void_p]),
        "fl_client_fetch_global_model": (c_int, [c_void_p, ctypes.POINTER(ctypes.c_float),
                                                 ctypes.c_size_t,
                                                 ctypes.POINTER(ctypes.c_uint64)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def find_library(flag):
    if flag:
        return flag
    if os.environ.get("FL_CLIENT_LIBRARY"):
        return os.environ["FL_CLIENT_LIBRARY"]
    here = os.path.dirname(os.path.abspath(__file__))
    built = os.path.join(here, os.pardir, "build", "packaging", "libfl_client.so.0")
    return built if os.path.exists(built) else "libfl_client.so.0"


class FlError(Exception):
    def __init__(self, lib, what, code):
        super().__init__(f"{what}: {lib.fl_last_error().decode(errors='replace')} (code {code})")
        self.code = code


def check(lib, what, code):
    if code != FL_OK:
        raise FlError(lib, what, code)


# ---- data ----

def read_idx(path, rank):
    """An IDX file of unsigned bytes with `rank` dimensions, as a numpy uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SystemExit(f"{PROGRAM}: {path} not found (the Debian package "
                         "dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist)")
    except (OSError, EOFError) as e:
        raise SystemExit(f"{PROGRAM}: {path}: corrupt or truncated gzip: {e}")
    header = 4 + 4 * rank
    if len(data) < header or data[:4] != bytes([0, 0, 0x08, rank]):
        raise SystemExit(f"{PROGRAM}: {path}: not an IDX file of rank {rank} unsigned bytes")
    dims = struct.unpack(">" + "I" * rank, data[4:header])
    if any(d < 1 or d > MAX_IMAGES for d in dims):
        raise SystemExit(f"{PROGRAM}: {path}: dimensions {dims} outside 1..{MAX_IMAGES}")
    if len(data) - header != math.prod(dims):
        raise SystemExit(f"{PROGRAM}: {path}: header promises {math.prod(dims)} bytes, "
                         f"file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_split(data_dir, prefix, limit, offset, stride):
    """Examples i < limit (0 = all) with i % stride == offset: (float32 [n, 784], int64 [n])."""
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"), 3)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), 1)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise SystemExit(f"{PROGRAM}: {prefix}: expected N x 28 x 28 images and N labels")
    n = images.shape[0] if limit == 0 else min(limit, images.shape[0])
    images = images[offset:n:stride].reshape(-1, PIXELS)
    labels = labels[offset:n:stride].astype(np.int64)
    if len(labels) == 0:
        raise SystemExit(f"{PROGRAM}: shard {offset} of {stride} of {n} {prefix} examples "
                         "is empty")
    if labels.max() >= CLASSES:
        raise SystemExit(f"{PROGRAM}: {prefix}: a label is not in 0..9")
    x = (images.astype(np.float32) / np.float32(255.0) - np.float32(PIXEL_MEAN)) / np.float32(
        PIXEL_STD)
    return x, labels


# ---- the model ----

def softmax_loss(w, b, x, y):
    """Cross-entropy per example and the softmax probabilities."""
    logits = x @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(logits).sum(axis=1))
    probabilities = np.exp(logits - log_sum[:, None])
    return log_sum - logits[np.arange(len(y)), y], probabilities


class App:
    """The model and data behind the fl_trainer callbacks."""

    def __init__(self, train, test):
        self.x, self.y = train
        self.test_x, self.test_y = test
        self.w = np.zeros((CLASSES, PIXELS), dtype=np.float32)
        self.b = np.zeros(CLASSES, dtype=np.float32)
        self.anchor = (self.w.copy(), self.b.copy())  # the last global model: FedProx
        self.tasks_started = 0
        self.initial_accuracy = None

    def evaluate(self):
        losses, correct = [], 0
        for start in range(0, len(self.test_y), 2048):
            x, y = self.test_x[start:start + 2048], self.test_y[start:start + 2048]
            loss, p = softmax_loss(self.w, self.b, x, y)
            losses.append(loss.sum(dtype=np.float64))
            correct += int((p.argmax(axis=1) == y).sum())
        n = len(self.test_y)
        return sum(losses) / n, correct / n

    def set_flat(self, values):
        self.w = values[:CLASSES * PIXELS].reshape(CLASSES, PIXELS).copy()
        self.b = values[CLASSES * PIXELS:].copy()
        self.anchor = (self.w.copy(), self.b.copy())

    def train(self, c):
        """Minibatch SGD as torch.optim.SGD steps (momentum buffer fresh per task)."""
        if not 1 <= c.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size {c.batch_size} outside [1, {MAX_BATCH}]")
        finite = all(math.isfinite(v) for v in (c.lr, c.momentum, c.weight_decay, c.prox_mu))
        if not (finite and c.lr > 0 and 0 <= c.momentum < 1 and c.weight_decay >= 0
                and c.prox_mu >= 0):
            raise ValueError("need lr > 0, momentum in [0, 1), weight_decay >= 0, prox_mu >= 0")
        if c.local_steps < 0 or c.local_epochs < 0 or (c.local_steps == 0 and c.local_epochs == 0):
            raise ValueError("need local_steps > 0 or local_epochs > 0")
        n, batch = len(self.y), c.batch_size
        steps = c.local_steps if c.local_steps > 0 else c.local_epochs * -(-n // batch)
        if steps > MAX_STEPS:
            raise ValueError(f"{steps} local steps (at most {MAX_STEPS})")

        if self.tasks_started == 0:
            _, self.initial_accuracy = self.evaluate()
            print(f"round {c.round}: received global model, test accuracy "
                  f"{self.initial_accuracy:.4f}", flush=True)
        self.tasks_started += 1

        rng = np.random.default_rng(c.seed)
        lr, momentum = np.float32(c.lr), np.float32(c.momentum)
        decay, mu = np.float32(c.weight_decay), np.float32(c.prox_mu)
        anchor_w, anchor_b = self.anchor
        velocity_w = velocity_b = None
        order, pos, seen, loss_sum = None, n, 0, 0.0
        for _ in range(steps):
            if pos >= n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + batch]
            x, y = self.x[idx], self.y[idx]
            loss, p = softmax_loss(self.w, self.b, x, y)
            p[np.arange(len(y)), y] -= 1  # d loss / d logits
            p /= np.float32(len(y))
            grad_w = p.T @ x + decay * self.w + mu * (self.w - anchor_w)
            grad_b = p.sum(axis=0) + decay * self.b + mu * (self.b - anchor_b)
            if velocity_w is None or momentum == 0:
                velocity_w, velocity_b = grad_w, grad_b
            else:
                velocity_w = momentum * velocity_w + grad_w
                velocity_b = momentum * velocity_b + grad_b
            self.w -= lr * velocity_w
            self.b -= lr * velocity_b
            loss_sum += float(loss.sum(dtype=np.float64))
            pos += len(y)
            seen += len(y)
        if not (np.isfinite(self.w).all() and np.isfinite(self.b).all()):
            raise ArithmeticError("training diverged (non-finite weights); lower lr")
        return seen, n, loss_sum / seen


def write_message(message, text):
    raw = text.encode(errors="replace")[:MESSAGE_BYTES - 1] + b"\0"
    ctypes.memmove(message, raw, len(raw))


def callback(code_on_error):
    """Turns a Python exception inside a callback into an error code and message: ctypes
    would otherwise print it and return 0, which the library reads as FL_OK."""
    def wrap(function):
        def guarded(*args):
            try:
                return function(*args)
            except Exception as e:  # noqa: BLE001 - every failure must reach the library
                traceback.print_exc()
                write_message(args[-1], f"{type(e).__name__}: {e}")
                return code_on_error(e)
        return guarded
    return wrap


def error_code(e):
    return FL_EINVALID_ARGUMENT if isinstance(e, ValueError) else FL_EINTERNAL


def make_trainer(app):
    @callback(error_code)
    def get_parameters(_, values, count, message):
        if count != NUM_PARAMETERS:
            raise ValueError(f"layout has {count} values, the model {NUM_PARAMETERS}")
        out = np.ctypeslib.as_array(values, shape=(count,))
        out[:CLASSES * PIXELS] = app.w.reshape(-1)
        out[CLASSES * PIXELS:] = app.b
        return FL_OK

    @callback(error_code)
    def set_parameters(_, values, count, message):
        if count != NUM_PARAMETERS:
            raise ValueError(f"layout has {count} values, the model {NUM_PARAMETERS}")
        app.set_flat(np.ctypeslib.as_array(values, shape=(count,)))
        return FL_OK

    @callback(error_code)
    def train(_, config, result, message):
        seen, size, mean_loss = app.train(config.contents)
        result.contents.num_examples = seen
        result.contents.dataset_size = size
        result.contents.mean_loss = mean_loss
        return FL_OK

    @callback(error_code)
    def evaluate(_, result, message):
        loss, accuracy = app.evaluate()
        result.contents.num_examples = len(app.test_y)
        result.contents.loss = loss
        result.contents.accuracy = accuracy
        return FL_OK

    # The CFUNCTYPE objects must outlive the run: the Trainer struct keeps them referenced.
    return Trainer(None, GET_PARAMETERS(get_parameters), SET_PARAMETERS(set_parameters),
                   TRAIN(train), EVALUATE(evaluate))


@TASK_CALLBACK
def on_task(_, round_, tasks_done, result):
    r = result.contents
    print(f"round {round_}: trained on {r.num_examples} examples ({r.dataset_size} local), "
          f"mean loss {r.mean_loss:.4f}, task {tasks_done}", flush=True)


def parse_flags(argv):
    p = argparse.ArgumentParser(
        prog=PROGRAM, description="Softmax regression on a Fashion-MNIST shard, as an "
        "fl-server federation client over libfl_client's C ABI (model: --model logreg).")
    p.add_argument("--library", help="path of libfl_client.so (default: $FL_CLIENT_LIBRARY, "
                   "then build/packaging next to this script, then the system's)")
    p.add_argument("--server", required=True, help="fl-server address (host:port)")
    p.add_argument("--tls-ca", help="PEM CA bundle the server certificate must chain to")
    p.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", help="client key (mutual TLS)")
    p.add_argument("--insecure", action="store_true", help="plaintext (explicit opt-in)")
    p.add_argument("--enrollment-token", default="", help="token the server expects")
    p.add_argument("--name", required=True, help="stable device name")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--partition-index", type=int, default=0, help="this client's shard")
    p.add_argument("--num-partitions", type=int, default=1,
                   help="shards: example e belongs to shard e %% N")
    p.add_argument("--train-examples", type=int, default=0,
                   help="use only the first K training images (0 = all)")
    p.add_argument("--test-examples", type=int, default=10000,
                   help="evaluate on the first K test images")
    p.add_argument("--poll-wait-ms", type=int, default=10000)
    a = p.parse_args(argv)
    if not 1 <= a.num_partitions <= 60000 or not 0 <= a.partition_index < a.num_partitions:
        p.error("need 1 <= --num-partitions <= 60000 and 0 <= --partition-index < it")
    if not 0 <= a.train_examples <= MAX_IMAGES or not 1 <= a.test_examples <= MAX_IMAGES:
        p.error(f"--train-examples in [0, {MAX_IMAGES}], --test-examples in [1, {MAX_IMAGES}]")
    if not 1 <= a.poll_wait_ms <= 3_600_000:
        p.error("--poll-wait-ms in [1, 3600000]")
    if (a.tls_cert is None) != (a.tls_key is None):
        p.error("give both --tls-cert and --tls-key, or neither")
    return a


def create_client(lib, a):
    options = lib.fl_client_options_new()
    if not options:
        raise FlError(lib, "options", FL_EINTERNAL)
    try:
        check(lib, "--server", lib.fl_client_options_set_server(options, a.server.encode()))
        if a.tls_ca:
            check(lib, "--tls-ca", lib.fl_client_options_set_tls_ca_file(options, a.tls_ca.encode()))
        if a.tls_cert:
            check(lib, "--tls-cert", lib.fl_client_options_set_tls_client_cert(
                options, a.tls_cert.encode(), a.tls_key.encode()))
        check(lib, "--insecure", lib.fl_client_options_set_insecure(options, int(a.insecure)))
        check(lib, "--enrollment-token", lib.fl_client_options_set_enrollment_token(
            options, a.enrollment_token.encode()))
        check(lib, "--name", lib.fl_client_options_set_name(options, a.name.encode()))
        check(lib, "--poll-wait-ms", lib.fl_client_options_set_poll_wait_ms(options, a.poll_wait_ms))
        client = ctypes.c_void_p()
        check(lib, "connection settings", lib.fl_client_create(options, ctypes.byref(client)))
    finally:
        lib.fl_client_options_free(options)
    # The layout of the SDK's "logreg", in the order the server's model lists it.
    for name, shape in (("fc.weight", (CLASSES, PIXELS)), ("fc.bias", (CLASSES,))):
        dims = (ctypes.c_int64 * len(shape))(*shape)
        check(lib, "layout", lib.fl_client_add_tensor(client, name.encode(), dims, len(shape)))
    return client


def main(argv):
    a = parse_flags(argv)
    path = find_library(a.library)
    try:
        lib = load_library(path)
    except OSError as e:
        print(f"{PROGRAM}: cannot load libfl_client ({path}): {e} (--library or "
              "FL_CLIENT_LIBRARY)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        client = create_client(lib, a)
    except FlError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return EXIT_USAGE if e.code == FL_EINVALID_ARGUMENT else EXIT_FAILURE
    try:
        app = App(load_split(a.data_dir, "train", a.train_examples, a.partition_index,
                             a.num_partitions),
                  load_split(a.data_dir, "t10k", a.test_examples, 0, 1))
        print(f"{PROGRAM} {a.name} (libfl_client {lib.fl_version().decode()}): {len(app.y)} "
              f"training examples (shard {a.partition_index} of {a.num_partitions}), "
              f"{len(app.test_y)} test examples, server {a.server}"
              f"{' (plaintext)' if a.insecure else ' (TLS)'}", flush=True)
        trainer = make_trainer(app)
        check(lib, "task callback", lib.fl_client_set_task_callback(client, on_task, None))

        # fl_client_run holds the calling thread for the whole federation; Python runs its
        # signal handlers only on the main thread between bytecodes, so the run goes to a
        # worker thread and the main thread stays free to turn a signal into a cancel.
        outcome = {}
        worker = threading.Thread(
            target=lambda: outcome.update(rc=lib.fl_client_run(client, ctypes.byref(trainer), 0)))
        stop = lambda *_: lib.fl_client_cancel(client)  # noqa: E731
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        rc = outcome.get("rc", FL_EINTERNAL)
        if rc == FL_ECANCELLED:
            print(f"{PROGRAM} {a.name}: stopped by signal", flush=True)
            return 0
        check(lib, "federation", rc)
        print(f"{PROGRAM} {a.name}: federation finished", flush=True)

        values = np.zeros(NUM_PARAMETERS, dtype=np.float32)
        version = ctypes.c_uint64()
        check(lib, "final global model", lib.fl_client_fetch_global_model(
            client, values.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), NUM_PARAMETERS,
            ctypes.byref(version)))
        app.set_flat(values)
        loss, final_accuracy = app.evaluate()
        print(f"final global model: version {version.value}, test loss {loss:.4f}")
        initial = "nan" if app.initial_accuracy is None else f"{app.initial_accuracy:.4f}"
        print(f"global accuracy: initial {initial} final {final_accuracy:.4f}", flush=True)
        return 0
    except FlError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        lib.fl_client_free(client)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
