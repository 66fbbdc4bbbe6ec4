/* Uses the installed C ABI of libfl_client (fl/fl_client.h) from C11. Built twice by the
 * packaging test: with CMake (fl::client) and with `pkg-config --cflags --libs fl_client`. */
#include <stdio.h>
#include <string.h>

#include "fl/fl_client.h"

static int failures = 0;

static void check(int ok, const char* what, const char* detail) {
  printf("%s: %s%s%s\n", ok ? "ok" : "FAIL", what, detail[0] ? ": " : "", detail);
  if (!ok) ++failures;
}

int main(void) {
  const char* version = fl_version();
  check(version != NULL && version[0] != '\0', "fl_version", version ? version : "");

  fl_client_options* options = fl_client_options_new();
  check(options != NULL, "fl_client_options_new", "");
  check(fl_client_options_set_name(options, "c-consumer") == FL_OK, "set_name", "");

  /* No server address: refused before any network traffic. */
  fl_client* client = NULL;
  int rc = fl_client_create(options, &client);
  check(rc == FL_EINVALID_ARGUMENT && client == NULL, "fl_client_create without a server",
        fl_last_error());
  check(strlen(fl_last_error()) > 0, "fl_last_error explains", "");

  check(fl_client_options_set_server(options, "localhost:1") == FL_OK, "set_server", "");
  check(fl_client_options_set_insecure(options, 1) == FL_OK, "set_insecure", "");
  rc = fl_client_create(options, &client);
  check(rc == FL_OK && client != NULL, "fl_client_create", rc == FL_OK ? "" : fl_last_error());
  if (client != NULL) {
    int64_t shape[2] = {4, 3};
    check(fl_client_add_tensor(client, "fc.weight", shape, 2) == FL_OK, "add_tensor", "");
    check(fl_client_num_parameters(client) == 12, "num_parameters", "");
    fl_client_free(client);
  }
  fl_client_options_free(options);

  /* The predictor (fl_predictor_*): a missing backbone file is refused with its own code. */
  fl_predictor* predictor = NULL;
  rc = fl_predictor_create("/nonexistent/backbone.flps", NULL, 4, 3, &predictor);
  check(rc == FL_ENOT_FOUND && predictor == NULL, "fl_predictor_create without a model file",
        fl_last_error());
  check(fl_predictor_num_classes(NULL) == 0, "fl_predictor_num_classes(NULL)", "");

  printf("%s\n", failures == 0 ? "PASS" : "FAILED");
  return failures == 0 ? 0 : 1;
}
