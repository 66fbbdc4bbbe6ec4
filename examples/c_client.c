/* fl-example-c-client: an edge app in plain C11 that uses nothing of the SDK but the C ABI
 * (fl/fl_client.h). It trains softmax (multinomial logistic) regression on its shard of
 * Fashion-MNIST as a member of an fl-server federation, with the model layout of the
 * SDK's "logreg" (fc.weight [10, 784], fc.bias [10]), so it federates with fl-client
 * --model logreg and examples/python_client.py.
 *
 *   fl-sim export-model --model logreg --seed 1 --out logreg.flps
 *   fl-server --init-model logreg.flps --tls-cert server.pem --tls-key server.key ...
 *   fl-example-c-client --server localhost:50051 --tls-ca ca.pem --enrollment-token T \
 *       --name c-0 --partition-index 0 --num-partitions 3
 *
 * Shard: the first --train-examples training images (0 = all 60,000) are dealt round-robin
 * into --num-partitions shards; shard i holds examples i, i + n, i + 2n, ... Evaluation
 * uses the first --test-examples images of the 10,000-image test set. Pixels are scaled
 * as the LibTorch trainers scale them: (x / 255 - 0.2860) / 0.3530.
 *
 * Output: one line per training task, then
 *   global accuracy: initial 0.1000 final 0.7512
 * where "initial" is the test accuracy of the global model this client received with its
 * first task (before training on it) and "final" that of the global model downloaded
 * after the federation finished.
 *
 * Exit status: 0 when the federation finished (or on SIGINT/SIGTERM), 2 for a bad command
 * line, 1 for any other failure. */

/* sigaction is POSIX, not C11. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fl/fl_client.h"

enum { kExitFailure = 1, kExitUsage = 2 };

#define kClasses 10
#define kRows 28
#define kCols 28
#define kPixels (kRows * kCols)

/* Fashion-MNIST's pixel statistics after scaling to [0, 1] (sdk/torch/torch_trainer.cc). */
static const float kPixelMean = 0.2860f;
static const float kPixelStd = 0.3530f;

/* Bounds on what the server may ask of one task: a larger request is a misconfigured
 * server, and refusing it keeps every count below within int64 and memory in check. */
static const int64_t kMaxBatch = 1 << 16;
static const int64_t kMaxSteps = 100000000;
/* The IDX files of Fashion-MNIST hold at most 60,000 images; refuse headers that promise
 * absurd sizes before allocating for them. */
static const uint32_t kMaxImages = 1000000;

/* ---- data ---- */

typedef struct Dataset {
  int64_t size;
  float* images; /* size * kPixels, normalized */
  uint8_t* labels;
} Dataset;

static void FreeDataset(Dataset* d) {
  free(d->images);
  free(d->labels);
  d->images = NULL;
  d->labels = NULL;
  d->size = 0;
}

static uint32_t BigEndian32(const unsigned char* p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Reads exactly `n` bytes; 0 on success. */
static int ReadExactly(gzFile f, void* out, size_t n, const char* path) {
  unsigned char* p = out;
  while (n > 0) {
    const unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
    const int got = gzread(f, p, chunk);
    if (got <= 0) {
      int zerr = 0;
      const char* why = gzerror(f, &zerr);
      fprintf(stderr, "fl-example-c-client: %s: truncated or corrupt (%s)\n", path,
              zerr != Z_OK && why != NULL ? why : "unexpected end of file");
      return -1;
    }
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

/* Reads an IDX file (gzip or plain; gzread passes plain files through) of unsigned bytes
 * with `rank` dimensions: dims[0] items of dims[1] * dims[2] bytes. Returns the bytes
 * (malloc'd) and fills dims; NULL on any error, with a message. */
static uint8_t* ReadIdx(const char* path, int rank, uint32_t dims[3]) {
  gzFile f = gzopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr,
            "fl-example-c-client: cannot open %s: %s (the Debian package "
            "dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist)\n",
            path, strerror(errno));
    return NULL;
  }
  uint8_t* data = NULL;
  unsigned char header[16];
  if (ReadExactly(f, header, 4 + 4 * (size_t)rank, path) != 0) goto done;
  /* Magic: two zero bytes, type 0x08 (unsigned byte), the rank. */
  if (header[0] != 0 || header[1] != 0 || header[2] != 0x08 || header[3] != rank) {
    fprintf(stderr, "fl-example-c-client: %s: not an IDX file of rank %d unsigned bytes\n", path,
            rank);
    goto done;
  }
  size_t total = 1;
  for (int i = 0; i < rank; ++i) {
    dims[i] = BigEndian32(header + 4 + 4 * i);
    if (dims[i] == 0 || dims[i] > kMaxImages) {
      fprintf(stderr, "fl-example-c-client: %s: dimension %d is %u (expected 1..%u)\n", path, i,
              dims[i], kMaxImages);
      goto done;
    }
    total *= dims[i];
  }
  data = malloc(total);
  if (data == NULL) {
    fprintf(stderr, "fl-example-c-client: %s: out of memory for %zu bytes\n", path, total);
    goto done;
  }
  if (ReadExactly(f, data, total, path) != 0) {
    free(data);
    data = NULL;
  }
done:
  gzclose(f);
  return data;
}

/* Loads `prefix` (train or t10k) from `dir` and keeps the examples i of the first `limit`
 * (0 = all) with i % stride == offset. 0 on success. */
static int LoadSplit(const char* dir, const char* prefix, int64_t limit, int64_t offset,
                     int64_t stride, Dataset* out) {
  char images_path[4096], labels_path[4096];
  if (snprintf(images_path, sizeof images_path, "%s/%s-images-idx3-ubyte.gz", dir, prefix) >=
          (int)sizeof images_path ||
      snprintf(labels_path, sizeof labels_path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix) >=
          (int)sizeof labels_path) {
    fprintf(stderr, "fl-example-c-client: --data-dir is too long\n");
    return -1;
  }
  uint32_t idims[3] = {0}, ldims[3] = {0};
  uint8_t* pixels = ReadIdx(images_path, 3, idims);
  if (pixels == NULL) return -1;
  uint8_t* labels = ReadIdx(labels_path, 1, ldims);
  if (labels == NULL) {
    free(pixels);
    return -1;
  }
  int rc = -1;
  if (idims[1] != kRows || idims[2] != kCols || idims[0] != ldims[0]) {
    fprintf(stderr, "fl-example-c-client: %s: expected N x 28 x 28 images and N labels\n",
            images_path);
    goto done;
  }
  int64_t n = idims[0];
  if (limit > 0 && limit < n) n = limit;
  const int64_t kept = n > offset ? (n - offset + stride - 1) / stride : 0;
  if (kept == 0) {
    fprintf(stderr, "fl-example-c-client: shard %lld of %lld of %lld %s examples is empty\n",
            (long long)offset, (long long)stride, (long long)n, prefix);
    goto done;
  }
  out->size = kept;
  out->images = malloc((size_t)kept * kPixels * sizeof(float));
  out->labels = malloc((size_t)kept);
  if (out->images == NULL || out->labels == NULL) {
    fprintf(stderr, "fl-example-c-client: out of memory for %lld examples\n", (long long)kept);
    FreeDataset(out);
    goto done;
  }
  for (int64_t k = 0; k < kept; ++k) {
    const int64_t i = offset + k * stride;
    if (labels[i] >= kClasses) {
      fprintf(stderr, "fl-example-c-client: %s: label %u of example %lld is not in 0..9\n",
              labels_path, labels[i], (long long)i);
      FreeDataset(out);
      goto done;
    }
    out->labels[k] = labels[i];
    const uint8_t* src = pixels + (size_t)i * kPixels;
    float* dst = out->images + (size_t)k * kPixels;
    for (int j = 0; j < kPixels; ++j) dst[j] = ((float)src[j] / 255.0f - kPixelMean) / kPixelStd;
  }
  rc = 0;
done:
  free(pixels);
  free(labels);
  return rc;
}

/* ---- the model: logits = W x + b, W [10][784] row-major as torch's Linear weight ---- */

typedef struct Model {
  float w[kClasses * kPixels];
  float b[kClasses];
} Model;

enum { kNumParameters = kClasses * kPixels + kClasses };

typedef struct App {
  Dataset train;
  Dataset test;
  Model model;
  Model anchor;   /* the last global model set: FedProx's reference point */
  Model grad;     /* scratch */
  Model velocity; /* momentum buffer, reset at every task as a fresh SGD optimizer does */
  int64_t* order; /* train.size entries: this epoch's permutation */
  int tasks_started;
  double initial_accuracy; /* of the global model received with the first task */
  uint64_t initial_round;
} App;

/* Softmax probabilities of one example into p; returns the cross-entropy for `label`. */
static double Forward(const Model* m, const float* x, int label, float p[kClasses]) {
  double z[kClasses];
  double zmax = -INFINITY;
  for (int k = 0; k < kClasses; ++k) {
    const float* wk = m->w + (size_t)k * kPixels;
    double s = m->b[k];
    for (int j = 0; j < kPixels; ++j) s += (double)wk[j] * x[j];
    z[k] = s;
    if (s > zmax) zmax = s;
  }
  double sum = 0;
  for (int k = 0; k < kClasses; ++k) sum += exp(z[k] - zmax);
  for (int k = 0; k < kClasses; ++k) p[k] = (float)(exp(z[k] - zmax) / sum);
  return log(sum) + zmax - z[label];
}

static void Evaluate(const Model* m, const Dataset* d, double* loss, double* accuracy) {
  double loss_sum = 0;
  int64_t correct = 0;
  float p[kClasses];
  for (int64_t i = 0; i < d->size; ++i) {
    loss_sum += Forward(m, d->images + (size_t)i * kPixels, d->labels[i], p);
    int best = 0;
    for (int k = 1; k < kClasses; ++k) {
      if (p[k] > p[best]) best = k;
    }
    correct += best == d->labels[i];
  }
  *loss = d->size > 0 ? loss_sum / (double)d->size : 0;
  *accuracy = d->size > 0 ? (double)correct / (double)d->size : 0;
}

/* SplitMix64: a small seeded generator, enough for shuffling. */
static uint64_t NextRandom(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void Shuffle(int64_t* v, int64_t n, uint64_t* state) {
  for (int64_t i = n - 1; i > 0; --i) {
    /* The modulo bias is below 2^-40 for shards of this size: irrelevant here. */
    const int64_t j = (int64_t)(NextRandom(state) % (uint64_t)(i + 1));
    const int64_t t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
}

static int Message(char* message, int code, const char* text) {
  snprintf(message, 256, "%s", text);
  return code;
}

/* ---- the fl_trainer callbacks ---- */

static int GetParameters(void* user_data, float* values, size_t count, char* message) {
  App* app = user_data;
  if (count != kNumParameters) return Message(message, FL_EINVALID_ARGUMENT, "wrong layout size");
  memcpy(values, app->model.w, sizeof app->model.w);
  memcpy(values + kClasses * kPixels, app->model.b, sizeof app->model.b);
  return FL_OK;
}

static int SetParameters(void* user_data, const float* values, size_t count, char* message) {
  App* app = user_data;
  if (count != kNumParameters) return Message(message, FL_EINVALID_ARGUMENT, "wrong layout size");
  memcpy(app->model.w, values, sizeof app->model.w);
  memcpy(app->model.b, values + kClasses * kPixels, sizeof app->model.b);
  app->anchor = app->model;
  return FL_OK;
}

/* Minibatch SGD on the cross-entropy, as torch.optim.SGD steps: d = grad + weight_decay *
 * w (+ prox_mu * (w - anchor)); v = momentum * v + d (v = d at the first step); w -= lr * v. */
static int Train(void* user_data, const fl_train_config* config, fl_train_result* result,
                 char* message) {
  App* app = user_data;
  const int64_t n = app->train.size;
  if (config->batch_size < 1 || config->batch_size > kMaxBatch) {
    return Message(message, FL_EINVALID_ARGUMENT, "batch_size outside [1, 65536]");
  }
  if (!(isfinite(config->lr) && config->lr > 0) ||
      !(isfinite(config->momentum) && config->momentum >= 0 && config->momentum < 1) ||
      !(isfinite(config->weight_decay) && config->weight_decay >= 0) ||
      !(isfinite(config->prox_mu) && config->prox_mu >= 0)) {
    return Message(message, FL_EINVALID_ARGUMENT,
                   "need lr > 0, momentum in [0, 1), weight_decay >= 0, prox_mu >= 0");
  }
  if (config->local_steps < 0 || config->local_epochs < 0 ||
      (config->local_steps == 0 && config->local_epochs == 0)) {
    return Message(message, FL_EINVALID_ARGUMENT, "need local_steps > 0 or local_epochs > 0");
  }
  const int64_t batch = config->batch_size;
  const int64_t steps = config->local_steps > 0
                            ? config->local_steps
                            : (int64_t)config->local_epochs * ((n + batch - 1) / batch);
  if (steps > kMaxSteps) return Message(message, FL_EINVALID_ARGUMENT, "too many local steps");

  if (app->tasks_started++ == 0) {
    double loss = 0;
    Evaluate(&app->model, &app->test, &loss, &app->initial_accuracy);
    app->initial_round = config->round;
    printf("round %llu: received global model, test accuracy %.4f\n",
           (unsigned long long)config->round, app->initial_accuracy);
    fflush(stdout);
  }

  uint64_t rng = config->seed;
  for (int64_t i = 0; i < n; ++i) app->order[i] = i;
  memset(&app->velocity, 0, sizeof app->velocity);
  const float lr = (float)config->lr, momentum = (float)config->momentum;
  const float decay = (float)config->weight_decay, mu = (float)config->prox_mu;
  float* params = (float*)&app->model;
  float* grads = (float*)&app->grad;
  float* velocity = (float*)&app->velocity;
  const float* anchor = (const float*)&app->anchor;
  double loss_sum = 0;
  int64_t pos = n; /* forces a shuffle before the first step */
  uint64_t seen = 0;
  float p[kClasses];
  for (int64_t step = 0; step < steps; ++step) {
    if (pos >= n) {
      Shuffle(app->order, n, &rng);
      pos = 0;
    }
    const int64_t b = batch < n - pos ? batch : n - pos;
    memset(&app->grad, 0, sizeof app->grad);
    for (int64_t e = 0; e < b; ++e) {
      const int64_t i = app->order[pos + e];
      const float* x = app->train.images + (size_t)i * kPixels;
      const int label = app->train.labels[i];
      loss_sum += Forward(&app->model, x, label, p);
      for (int k = 0; k < kClasses; ++k) {
        /* d loss / d logit_k = p_k - [k == label], averaged over the batch. */
        const float g = (p[k] - (k == label ? 1.0f : 0.0f)) / (float)b;
        float* gw = app->grad.w + (size_t)k * kPixels;
        for (int j = 0; j < kPixels; ++j) gw[j] += g * x[j];
        app->grad.b[k] += g;
      }
    }
    for (int j = 0; j < kNumParameters; ++j) {
      float d = grads[j] + decay * params[j] + mu * (params[j] - anchor[j]);
      velocity[j] = (step == 0 || momentum == 0) ? d : momentum * velocity[j] + d;
      params[j] -= lr * velocity[j];
    }
    pos += b;
    seen += (uint64_t)b;
  }
  for (int j = 0; j < kNumParameters; ++j) {
    if (!isfinite(params[j])) {
      return Message(message, FL_EINTERNAL, "training diverged (non-finite weights); lower lr");
    }
  }
  result->num_examples = seen;
  result->dataset_size = (uint64_t)n;
  result->mean_loss = seen > 0 ? loss_sum / (double)seen : 0;
  return FL_OK;
}

static int EvaluateCallback(void* user_data, fl_eval_result* result, char* message) {
  App* app = user_data;
  (void)message;
  Evaluate(&app->model, &app->test, &result->loss, &result->accuracy);
  result->num_examples = (uint64_t)app->test.size;
  return FL_OK;
}

static void OnTask(void* user_data, uint64_t round, uint64_t tasks_done,
                   const fl_train_result* r) {
  (void)user_data;
  printf("round %llu: trained on %llu examples (%llu local), mean loss %.4f, task %llu\n",
         (unsigned long long)round, (unsigned long long)r->num_examples,
         (unsigned long long)r->dataset_size, r->mean_loss, (unsigned long long)tasks_done);
  fflush(stdout);
}

/* ---- command line ---- */

typedef struct Flags {
  const char* server;
  const char* tls_ca;
  const char* tls_cert;
  const char* tls_key;
  int insecure;
  const char* token;
  const char* name;
  const char* data_dir;
  int64_t partition_index;
  int64_t num_partitions;
  int64_t train_examples;
  int64_t test_examples;
  int64_t poll_wait_ms;
} Flags;

static void Usage(FILE* out) {
  fprintf(out,
          "Usage: fl-example-c-client --server HOST:PORT --name NAME [options]\n"
          "Softmax regression on a Fashion-MNIST shard, as an fl-server federation client\n"
          "(model layout: fl-server's --model logreg).\n"
          "  --server HOST:PORT         fl-server address (required)\n"
          "  --tls-ca FILE              PEM CA bundle the server certificate must chain to\n"
          "  --tls-cert FILE --tls-key FILE   client certificate and key (mutual TLS)\n"
          "  --insecure                 plaintext connection (explicit opt-in)\n"
          "  --enrollment-token TOKEN   token the server expects\n"
          "  --name NAME                stable device name (required)\n"
          "  --data-dir DIR             Fashion-MNIST IDX files "
          "(default /usr/share/datasets/fashion-mnist)\n"
          "  --partition-index I        this client's shard, in [0, N) (default 0)\n"
          "  --num-partitions N         shards: example e belongs to shard e %% N (default 1)\n"
          "  --train-examples K         use only the first K training images (0 = all)\n"
          "  --test-examples K          evaluate on the first K test images (default 10000)\n"
          "  --poll-wait-ms MS          longest wait of one task poll (default 10000)\n");
}

/* Parses a decimal integer in [lo, hi]; 0 on success. */
static int ParseInt(const char* flag, const char* text, int64_t lo, int64_t hi, int64_t* out) {
  char* end = NULL;
  errno = 0;
  const long long v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "fl-example-c-client: %s must be an integer in [%lld, %lld] (got \"%s\")\n",
            flag, (long long)lo, (long long)hi, text);
    return -1;
  }
  *out = v;
  return 0;
}

/* 0: parsed; 1: --help printed; -1: bad command line. */
static int ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      Usage(stdout);
      return 1;
    }
    if (strcmp(a, "--insecure") == 0) {
      f->insecure = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "fl-example-c-client: %s needs a value (see --help)\n", a);
      return -1;
    }
    const char* v = argv[++i];
    int rc = 0;
    if (strcmp(a, "--server") == 0) f->server = v;
    else if (strcmp(a, "--tls-ca") == 0) f->tls_ca = v;
    else if (strcmp(a, "--tls-cert") == 0) f->tls_cert = v;
    else if (strcmp(a, "--tls-key") == 0) f->tls_key = v;
    else if (strcmp(a, "--enrollment-token") == 0) f->token = v;
    else if (strcmp(a, "--name") == 0) f->name = v;
    else if (strcmp(a, "--data-dir") == 0) f->data_dir = v;
    else if (strcmp(a, "--partition-index") == 0) rc = ParseInt(a, v, 0, 60000, &f->partition_index);
    else if (strcmp(a, "--num-partitions") == 0) rc = ParseInt(a, v, 1, 60000, &f->num_partitions);
    else if (strcmp(a, "--train-examples") == 0) rc = ParseInt(a, v, 0, kMaxImages, &f->train_examples);
    else if (strcmp(a, "--test-examples") == 0) rc = ParseInt(a, v, 1, kMaxImages, &f->test_examples);
    else if (strcmp(a, "--poll-wait-ms") == 0) rc = ParseInt(a, v, 1, 3600000, &f->poll_wait_ms);
    else {
      fprintf(stderr, "fl-example-c-client: unknown flag %s (see --help)\n", a);
      return -1;
    }
    if (rc != 0) return -1;
  }
  if (f->server == NULL || f->name == NULL) {
    fprintf(stderr, "fl-example-c-client: --server and --name are required (see --help)\n");
    return -1;
  }
  if (f->partition_index >= f->num_partitions) {
    fprintf(stderr, "fl-example-c-client: --partition-index %lld is not in [0, %lld)\n",
            (long long)f->partition_index, (long long)f->num_partitions);
    return -1;
  }
  if ((f->tls_cert == NULL) != (f->tls_key == NULL)) {
    fprintf(stderr, "fl-example-c-client: give both --tls-cert and --tls-key, or neither\n");
    return -1;
  }
  return 0;
}

/* ---- main ---- */

/* Set before the handlers are installed; fl_client_cancel only sets an atomic flag. */
static fl_client* g_client = NULL;

static void OnStopSignal(int signal) {
  (void)signal;
  if (g_client != NULL) fl_client_cancel(g_client);
}

static int FailCall(const char* what) {
  fprintf(stderr, "fl-example-c-client: %s: %s\n", what, fl_last_error());
  return kExitFailure;
}

/* Sets up the client from the flags; returns an exit status (0 = ready). */
static int CreateClient(const Flags* f, fl_client** out) {
  fl_client_options* o = fl_client_options_new();
  if (o == NULL) return FailCall("options");
  int rc = fl_client_options_set_server(o, f->server);
  if (rc == FL_OK && f->tls_ca != NULL) rc = fl_client_options_set_tls_ca_file(o, f->tls_ca);
  if (rc == FL_OK && f->tls_cert != NULL) {
    rc = fl_client_options_set_tls_client_cert(o, f->tls_cert, f->tls_key);
  }
  if (rc == FL_OK) rc = fl_client_options_set_insecure(o, f->insecure);
  if (rc == FL_OK && f->token != NULL) rc = fl_client_options_set_enrollment_token(o, f->token);
  if (rc == FL_OK) rc = fl_client_options_set_name(o, f->name);
  if (rc == FL_OK) rc = fl_client_options_set_poll_wait_ms(o, f->poll_wait_ms);
  if (rc == FL_OK) rc = fl_client_create(o, out);
  fl_client_options_free(o);
  if (rc != FL_OK) {
    fprintf(stderr, "fl-example-c-client: connection settings: %s\n", fl_last_error());
    return rc == FL_EINVALID_ARGUMENT ? kExitUsage : kExitFailure;
  }
  /* The layout of the SDK's "logreg", in the order the server's model lists it. */
  const int64_t weight_shape[2] = {kClasses, kPixels};
  const int64_t bias_shape[1] = {kClasses};
  if (fl_client_add_tensor(*out, "fc.weight", weight_shape, 2) != FL_OK ||
      fl_client_add_tensor(*out, "fc.bias", bias_shape, 1) != FL_OK) {
    return FailCall("layout");
  }
  return 0;
}

int main(int argc, char** argv) {
  Flags flags = {0};
  flags.data_dir = "/usr/share/datasets/fashion-mnist";
  flags.num_partitions = 1;
  flags.test_examples = 10000;
  flags.poll_wait_ms = 10000;
  const int parsed = ParseFlags(argc, argv, &flags);
  if (parsed != 0) return parsed > 0 ? 0 : kExitUsage;

  static App app; /* ~190 KB of model buffers: static, not on the stack */
  fl_client* client = NULL;
  int status = CreateClient(&flags, &client);
  if (status != 0) {
    fl_client_free(client);
    return status;
  }
  if (LoadSplit(flags.data_dir, "train", flags.train_examples, flags.partition_index,
                flags.num_partitions, &app.train) != 0 ||
      LoadSplit(flags.data_dir, "t10k", flags.test_examples, 0, 1, &app.test) != 0) {
    fl_client_free(client);
    FreeDataset(&app.train);
    return kExitFailure;
  }
  app.order = malloc((size_t)app.train.size * sizeof *app.order);
  if (app.order == NULL) {
    fprintf(stderr, "fl-example-c-client: out of memory\n");
    status = kExitFailure;
    goto done;
  }
  printf("fl-example-c-client %s (libfl_client %s): %lld training examples (shard %lld of %lld), "
         "%lld test examples, server %s%s\n",
         flags.name, fl_version(), (long long)app.train.size, (long long)flags.partition_index,
         (long long)flags.num_partitions, (long long)app.test.size, flags.server,
         flags.insecure ? " (plaintext)" : " (TLS)");
  fflush(stdout);

  g_client = client;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND; /* a second signal ends the process at once */
  sigaction(SIGINT, &action, NULL);
  sigaction(SIGTERM, &action, NULL);

  fl_trainer trainer = {&app, GetParameters, SetParameters, Train, EvaluateCallback};
  fl_client_set_task_callback(client, OnTask, NULL);
  const int rc = fl_client_run(client, &trainer, 0);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (rc == FL_ECANCELLED) {
    printf("fl-example-c-client %s: stopped by signal\n", flags.name);
    goto done;
  }
  if (rc != FL_OK) {
    status = FailCall("federation");
    goto done;
  }
  printf("fl-example-c-client %s: federation finished\n", flags.name);

  static float final_values[kNumParameters];
  uint64_t version = 0;
  if (fl_client_fetch_global_model(client, final_values, kNumParameters, &version) != FL_OK ||
      SetParameters(&app, final_values, kNumParameters, (char[256]){0}) != FL_OK) {
    status = FailCall("final global model");
    goto done;
  }
  double loss = 0, final_accuracy = 0;
  Evaluate(&app.model, &app.test, &loss, &final_accuracy);
  printf("final global model: version %llu, test loss %.4f\n", (unsigned long long)version, loss);
  if (app.tasks_started == 0) {
    /* This client trained no task (the federation had finished): nothing to compare. */
    printf("global accuracy: initial nan final %.4f\n", final_accuracy);
  } else {
    printf("global accuracy: initial %.4f final %.4f\n", app.initial_accuracy, final_accuracy);
  }
done:
  g_client = NULL;
  fl_client_free(client);
  free(app.order);
  FreeDataset(&app.train);
  FreeDataset(&app.test);
  return status;
}
