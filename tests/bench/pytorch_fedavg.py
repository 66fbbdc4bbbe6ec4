#!/usr/bin/python3
"""Plain PyTorch FedAvg on the W1 workload (fmnist-cnn): the baseline fl-sim is compared to.

Same CNN (conv5x5 16 -> pool -> conv5x5 32 -> pool -> fc 128 -> fc 10, 'same' padding),
same normalization, same hyperparameters (SGD, batch 32, 1 local epoch), same number of
clients and clients per round. Written the way one would write it by hand in PyTorch:
the data set lives in memory as tensors, each selected client trains a copy of the
global model on its examples in shuffled minibatches, and the server averages the
clients' weights in proportion to their example counts.

To run on exactly fl-sim's workload, pass the partition fl-sim uses
(`fl-sim export-partition --out partition.json`) and the clients fl-sim selected in each
round (`--selection-from <fl-sim out dir>/run.db`). Without them the script draws its own
Dirichlet split and selection (numpy), which has the same statistics but not the same
samples.

Needs Debian's python3-torch: run it as /usr/bin/python3 (a pyenv python on PATH may lack
torch). Prints per-round lines and a final line
  "pytorch fedavg: <n> samples in <t> s of training: <x> samples/s"
where the time covers local training and aggregation, not evaluation (fl-sim reports
its samples/s the same way).
"""

import argparse
import gzip
import json
import os
import sqlite3
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data_dir, prefix, limit):
    def find(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(data_dir, candidate)
            if os.path.exists(path):
                return path
        sys.exit(f"missing {os.path.join(data_dir, name)}.gz "
                 "(install the Debian package dataset-fashion-mnist)")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = ((x - PIXEL_MEAN) / PIXEL_STD).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def dirichlet_partition(labels, num_clients, alpha, rng):
    """Per class, Dirichlet(alpha) proportions over clients (fl-sim's rule); empty
    clients take one example from the largest client."""
    clients = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        cuts = np.rint(np.cumsum(rng.dirichlet([alpha] * num_clients)) * len(idx)).astype(int)
        cuts[-1] = len(idx)
        for k, part in enumerate(np.split(idx, np.maximum.accumulate(cuts)[:-1])):
            clients[k].extend(part.tolist())
    for k in range(num_clients):
        if not clients[k]:
            donor = max(range(num_clients), key=lambda j: len(clients[j]))
            clients[k].append(clients[donor].pop(rng.integers(len(clients[donor]))))
    return [sorted(c) for c in clients]


def selection_from_run(db_path):
    """round -> client indices, from fl-sim's run record (clients are named client-<i>)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    names = {cid: name for cid, name in db.execute("SELECT id, name FROM clients")}
    rounds = {}
    for rnd, selected in db.execute("SELECT round, selected FROM rounds ORDER BY round"):
        ids = [int(s) for s in selected.split(",") if s]
        rounds[rnd] = [int(names[i].split("-")[1]) for i in ids]
    db.close()
    return rounds


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for s in range(0, len(y), batch):
            logits = model(x[s:s + batch])
            loss += F.cross_entropy(logits, y[s:s + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[s:s + batch]).sum().item()
    model.train()
    return correct / len(y), loss / len(y)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--partition-file", help="JSON from `fl-sim export-partition`")
    p.add_argument("--selection-from", help="fl-sim run.db: replay its client selection")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--clients-per-round", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-examples", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate every N rounds (0: only after the last round)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_x, train_y = load_split(args.data_dir, "train", args.train_examples)
    test_x, test_y = load_split(args.data_dir, "t10k", 0)

    if args.partition_file:
        with open(args.partition_file) as f:
            clients = json.load(f)["clients"]
    else:
        clients = dirichlet_partition(train_y.numpy(), args.clients, args.alpha, rng)
    clients = [torch.tensor(c, dtype=torch.int64) for c in clients]
    selection = selection_from_run(args.selection_from) if args.selection_from else None

    global_model = Cnn()
    local_model = Cnn()
    train_seconds, samples = 0.0, 0
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(clients)} clients, {args.rounds} rounds", flush=True)
    for rnd in range(1, args.rounds + 1):
        if selection is not None:
            chosen = selection[rnd]
        else:
            chosen = sorted(rng.choice(len(clients), args.clients_per_round, replace=False))
        start = time.perf_counter()
        global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
        new_state = {k: torch.zeros_like(v) for k, v in global_state.items()}
        total_weight = 0.0
        for k in chosen:
            idx = clients[k]
            local_model.load_state_dict(global_state)
            opt = torch.optim.SGD(local_model.parameters(), lr=args.lr, momentum=args.momentum)
            for _ in range(args.local_epochs):
                order = idx[torch.randperm(len(idx))]
                for s in range(0, len(order), args.batch_size):
                    b = order[s:s + args.batch_size]
                    opt.zero_grad()
                    loss = F.cross_entropy(local_model(train_x[b]), train_y[b])
                    loss.backward()
                    opt.step()
                    samples += len(b)
            weight = float(len(idx))
            total_weight += weight
            with torch.no_grad():
                for name, value in local_model.state_dict().items():
                    new_state[name].add_(value, alpha=weight)
        with torch.no_grad():
            for name in new_state:
                new_state[name].div_(total_weight)
        global_model.load_state_dict(new_state)
        train_seconds += time.perf_counter() - start
        if (args.eval_every and rnd % args.eval_every == 0) or rnd == args.rounds:
            acc, test_loss = evaluate(global_model, test_x, test_y)
            print(f"round {rnd}: accuracy {100 * acc:.2f}%, test loss {test_loss:.4f}, "
                  f"{samples / train_seconds:.0f} samples/s", flush=True)
    print(f"pytorch fedavg: {samples} samples in {train_seconds:.2f} s of training: "
          f"{samples / train_seconds:.0f} samples/s", flush=True)


if __name__ == "__main__":
    main()
