#ifndef FL_SERVER_DEV_CERTS_H_
#define FL_SERVER_DEV_CERTS_H_

// Development TLS material: a throwaway CA, a server certificate for the local machine
// and a client certificate for mutual TLS. For tests and first runs only; production
// deployments bring certificates from their own PKI.

#include <string>
#include <vector>

#include "fl/status.h"

namespace fl::internal {

struct DevCertOptions {
  // Subject alternative names of the server certificate. Entries that parse as an IPv4
  // or IPv6 address become IP SANs, everything else DNS SANs.
  std::vector<std::string> server_names = {"localhost", "127.0.0.1", "::1"};
  // Common name of the client certificate.
  std::string client_name = "fl-dev-client";
  // Validity of every certificate, from one hour ago (clock skew) onwards.
  int valid_days = 365;
};

// PEM file paths written by MakeDevCerts.
struct DevCertPaths {
  std::string ca_cert;      // <dir>/ca.pem
  std::string ca_key;       // <dir>/ca.key
  std::string server_cert;  // <dir>/server.pem (signed by the CA)
  std::string server_key;   // <dir>/server.key
  std::string client_cert;  // <dir>/client.pem (signed by the CA, clientAuth)
  std::string client_key;   // <dir>/client.key
};

// Creates `dir` if needed and writes a fresh ECDSA P-256 CA, server and client key pair
// and certificate into it, replacing files of the same names. Private keys are written
// with mode 0600. Internal if OpenSSL fails; Unavailable if a file cannot be written.
Result<DevCertPaths> MakeDevCerts(const std::string& dir, const DevCertOptions& options = {});

}  // namespace fl::internal

#endif  // FL_SERVER_DEV_CERTS_H_
