#ifndef FL_SDK_INCLUDE_FL_FL_CLIENT_H_
#define FL_SDK_INCLUDE_FL_FL_CLIENT_H_

/* The C ABI of the federation client (libfl_client), for C and for any language with a
 * C foreign-function interface (Python ctypes, Rust, Go, Java's FFM, ...).
 *
 *   fl_client_options* o = fl_client_options_new();
 *   fl_client_options_set_server(o, "localhost:50051");
 *   fl_client_options_set_tls_ca_file(o, "ca.pem");
 *   fl_client_options_set_enrollment_token(o, "s3cret");
 *   fl_client_options_set_name(o, "sensor-17");
 *   fl_client* c = NULL;
 *   if (fl_client_create(o, &c) != FL_OK) fprintf(stderr, "%s\n", fl_last_error());
 *   fl_client_options_free(o);
 *   int64_t w_shape[2] = {10, 784};
 *   fl_client_add_tensor(c, "fc.weight", w_shape, 2);   // the model's layout, in order
 *   ...
 *   fl_trainer t = {my_state, my_get, my_set, my_train, my_evaluate};
 *   int rc = fl_client_run(c, &t, 0);                    // until the federation is done
 *   fl_client_free(c);
 *
 * Conventions: every call that can fail returns an int status code (FL_OK = 0; otherwise
 * one of the FL_E* codes below) and leaves a message for fl_last_error(). Strings are
 * NUL-terminated UTF-8 and copied before the call returns. Handles are opaque; one client
 * is driven by one thread at a time, except fl_client_cancel(), which any thread may call.
 * No C++ exception crosses this interface.
 */

#include <stddef.h>
#include <stdint.h>

#include "fl/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: the same numbers as fl::StatusCode (and gRPC). */
enum {
  FL_OK = 0,
  FL_ECANCELLED = 1,
  FL_EUNKNOWN = 2,
  FL_EINVALID_ARGUMENT = 3,
  FL_EDEADLINE_EXCEEDED = 4,
  FL_ENOT_FOUND = 5,
  FL_EALREADY_EXISTS = 6,
  FL_EPERMISSION_DENIED = 7,
  FL_ERESOURCE_EXHAUSTED = 8,
  FL_EFAILED_PRECONDITION = 9,
  FL_EABORTED = 10,
  FL_EOUT_OF_RANGE = 11,
  FL_EUNIMPLEMENTED = 12,
  FL_EINTERNAL = 13,
  FL_EUNAVAILABLE = 14,
  FL_EDATA_LOSS = 15,
  FL_EUNAUTHENTICATED = 16
};

/* The message of the last failed call on this thread ("" if none); successful calls
 * leave it as it is. Valid until the next call into the library from this thread. */
FL_EXPORT const char* fl_last_error(void);

/* Version of the library, "major.minor.patch". */
FL_EXPORT const char* fl_version(void);

/* ---- Connection options ---- */
typedef struct fl_client_options fl_client_options;

FL_EXPORT fl_client_options* fl_client_options_new(void);
FL_EXPORT void fl_client_options_free(fl_client_options* options); /* NULL is a no-op */
/* "host:port" of fl-server. Required. */
FL_EXPORT int fl_client_options_set_server(fl_client_options* options, const char* address);
/* PEM CA bundle the server certificate must chain to (default: the system's roots). */
FL_EXPORT int fl_client_options_set_tls_ca_file(fl_client_options* options, const char* path);
/* Client certificate and key for mutual TLS. */
FL_EXPORT int fl_client_options_set_tls_client_cert(fl_client_options* options,
                                                    const char* cert_path, const char* key_path);
/* Plaintext connection (explicit opt-in); nonzero enables. */
FL_EXPORT int fl_client_options_set_insecure(fl_client_options* options, int insecure);
FL_EXPORT int fl_client_options_set_enrollment_token(fl_client_options* options,
                                                     const char* token);
/* Stable device name. Required. */
FL_EXPORT int fl_client_options_set_name(fl_client_options* options, const char* name);
/* Longest wait of one task poll, in milliseconds. */
FL_EXPORT int fl_client_options_set_poll_wait_ms(fl_client_options* options, int64_t ms);
/* fl_client_run gives up after this many consecutive failed steps (default 20; 0 = never),
 * returning the last error. */
FL_EXPORT int fl_client_options_set_max_failures(fl_client_options* options, int32_t count);
/* Nonzero: send each trained update while the next task trains (CO2 overlap; see
 * fl::ClientOptions::overlap). Default 0. */
FL_EXPORT int fl_client_options_set_overlap(fl_client_options* options, int overlap);

/* ---- The trainer: the app's model and data, as callbacks ---- */

/* What the server asks of one local training run. */
typedef struct fl_train_config {
  int32_t local_epochs;  /* passes over local data when local_steps == 0 */
  int32_t local_steps;   /* if > 0, exactly this many minibatch steps instead */
  int32_t batch_size;
  double lr;
  double momentum;
  double weight_decay;
  double prox_mu;        /* FedProx: (mu/2)||w - w_global||^2 added to the loss */
  uint64_t seed;         /* per (run, client, round): shuffling */
  uint64_t round;        /* the task's round (1, 2, ...) */
} fl_train_config;

typedef struct fl_train_result {
  uint64_t num_examples; /* examples seen, with repetition */
  uint64_t dataset_size; /* distinct local examples: the aggregation weight; > 0 */
  double mean_loss;
} fl_train_result;

typedef struct fl_eval_result {
  uint64_t num_examples;
  double loss;
  double accuracy;       /* in [0, 1] */
} fl_eval_result;

/* Each callback returns FL_OK or an error code; `message` (may be left untouched) takes
 * a NUL-terminated reason of at most 255 bytes. `values` hold the model's parameters as
 * float32 in layout order (the tensors added with fl_client_add_tensor, each row-major),
 * `count` of them. `evaluate` may be NULL. */
typedef struct fl_trainer {
  void* user_data;
  int (*get_parameters)(void* user_data, float* values, size_t count, char* message);
  int (*set_parameters)(void* user_data, const float* values, size_t count, char* message);
  int (*train)(void* user_data, const fl_train_config* config, fl_train_result* result,
               char* message);
  int (*evaluate)(void* user_data, fl_eval_result* result, char* message);
} fl_trainer;

/* ---- The client ---- */
typedef struct fl_client fl_client;

/* Checks the options and prepares the connection (made on the first call). */
FL_EXPORT int fl_client_create(const fl_client_options* options, fl_client** out);
/* NULL is a no-op. REQUIRES: no fl_client_run in progress. */
FL_EXPORT void fl_client_free(fl_client* client);

/* Declares the model's next tensor (name, row-major shape). The layout must equal the
 * server's model: same names, shapes and order. REQUIRES: before fl_client_run. */
FL_EXPORT int fl_client_add_tensor(fl_client* client, const char* name, const int64_t* shape,
                                   size_t ndim);
/* Number of float32 values of the declared layout. */
FL_EXPORT size_t fl_client_num_parameters(const fl_client* client);

/* Progress after each completed training task; may be NULL. */
typedef void (*fl_task_callback)(void* user_data, uint64_t round, uint64_t tasks_done,
                                 const fl_train_result* result);
FL_EXPORT int fl_client_set_task_callback(fl_client* client, fl_task_callback callback,
                                          void* user_data);

/* Joins, then trains on tasks until the federation is done (FL_OK), `max_tasks` tasks
 * are completed (FL_OK; 0 = no limit), fl_client_cancel was called (FL_ECANCELLED), or
 * the client gives up (the error). */
FL_EXPORT int fl_client_run(fl_client* client, const fl_trainer* trainer, uint64_t max_tasks);
/* Asks a running fl_client_run to return FL_ECANCELLED. Any thread, and from a signal
 * handler (it only sets an atomic flag). A callback in progress is not interrupted: the
 * run returns once it has returned. Cancellation is final: a later fl_client_run on the
 * same client returns FL_ECANCELLED at once (create a new client to rejoin). */
FL_EXPORT void fl_client_cancel(fl_client* client);

/* Downloads the current global model into `values` (`count` must equal
 * fl_client_num_parameters) and its version into *version (may be NULL). Joins first if
 * needed. FL_EFAILED_PRECONDITION if the server's model has another layout (the message
 * names the first differing tensor). REQUIRES: no fl_client_run in progress. */
FL_EXPORT int fl_client_fetch_global_model(fl_client* client, float* values, size_t count,
                                           uint64_t* version);

/* ---- Predictions of a federated tiny ViT (fl/adaptive_predictor.h), without LibTorch ----
 *
 *   fl_predictor* p = NULL;
 *   if (fl_predictor_create("backbone.flps", "pool.flps", 4, 3, &p) != FL_OK) ...;
 *   int32_t labels[64];
 *   int rc = fl_predictor_predict(p, pixels, 64, labels, NULL, NULL);
 *   fl_predictor_set_tuned(p, "pool-round-7.flps");   (after a round)
 *   fl_predictor_free(p);
 *
 * One predictor may serve fl_predictor_predict on several threads at once;
 * fl_predictor_set_tuned and fl_predictor_free must not overlap any other call on it. */
typedef struct fl_predictor fl_predictor;

/* Loads a tiny-ViT backbone from a model file (".flps", as fl-sim export-model writes)
 * and, unless tuned_path is NULL, the federated tuned part: a FedIns pool
 * ("pool.<i>.*"), one SSF set ("ssf.*" + "head.*") or tensors of the backbone that
 * replace its own (e.g. "head.*"). heads: the backbone's attention heads (4 for
 * vit-tiny); top_k: pool entries each image combines (>= 1; at most the pool's entries).
 * FL_ENOT_FOUND for a missing file; FL_EDATA_LOSS for a truncated or corrupt model file,
 * FL_EINVALID_ARGUMENT for one that is no model file at all; FL_EINVALID_ARGUMENT,
 * naming the tensor, for a backbone that is not a tiny ViT or a tuned part that does not
 * fit it, and for a bad heads or top_k. */
FL_EXPORT int fl_predictor_create(const char* backbone_path, const char* tuned_path, int32_t heads,
                                  int32_t top_k, fl_predictor** out);
/* NULL is a no-op. */
FL_EXPORT void fl_predictor_free(fl_predictor* predictor);

/* Replaces the tuned part with the model file at tuned_path (NULL: the backbone alone),
 * e.g. a newer global pool after a round. Errors as fl_predictor_create's; the previous
 * tuned part then stays in place. */
FL_EXPORT int fl_predictor_set_tuned(fl_predictor* predictor, const char* tuned_path);

/* The number of classes (logits per image), the side of the square input images in
 * pixels, and the entries of the tuned pool (0 without one); 0 for NULL. */
FL_EXPORT int32_t fl_predictor_num_classes(const fl_predictor* predictor);
FL_EXPORT int32_t fl_predictor_image_size(const fl_predictor* predictor);
FL_EXPORT int32_t fl_predictor_pool_entries(const fl_predictor* predictor);

/* Classifies `count` images of image_size x image_size raw grey pixels (0..255,
 * row-major, image after image). Writes count labels; if logits is not NULL, count x
 * num_classes logits; if entries is not NULL, count x top_k pool entries per image, most
 * similar first (-1 without a pool). */
FL_EXPORT int fl_predictor_predict(const fl_predictor* predictor, const uint8_t* pixels,
                                   size_t count, int32_t* labels, float* logits,
                                   int32_t* entries);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* FL_SDK_INCLUDE_FL_FL_CLIENT_H_ */
