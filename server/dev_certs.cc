#include "server/dev_certs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "fl/env.h"

namespace fl::internal {
namespace {

struct EvpPkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

// OpenSSL keeps a per-thread error queue; drain it into the message so the caller sees
// why, and so stale errors do not leak into the next OpenSSL user on this thread.
Status OpenSslError(const std::string& what) {
  std::string msg = what;
  unsigned long err;
  while ((err = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    msg += ": ";
    msg += buf;
  }
  return Status::Internal(msg);
}

Result<PkeyPtr> NewKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("generating a P-256 key");
  return key;
}

Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return OpenSslError("building extension " + value);
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return OpenSslError("adding extension " + value);
  return Status::Ok();
}

bool IsIpAddress(const std::string& name) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

struct CertSpec {
  std::string common_name;
  bool is_ca = false;
  std::string extended_key_usage;  // "serverAuth" / "clientAuth"; empty for the CA
  std::string subject_alt_names;   // "DNS:a,IP:b"; may be empty
};

// Builds a certificate for `key`, signed by `issuer_key` (and issued by `issuer`, or
// self-issued when issuer is null).
Result<X509Ptr> MakeCert(const CertSpec& spec, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key,
                         int valid_days) {
  X509Ptr cert(X509_new());
  if (!cert) return OpenSslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslError("X509_set_version");

  // Random positive 63-bit serial: a re-generated CA must not reuse serials that a
  // client may have cached.
  unsigned char serial_bytes[8];
  if (RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1) return OpenSslError("RAND_bytes");
  serial_bytes[0] &= 0x7f;
  BnPtr serial(BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr));
  if (!serial || BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return OpenSslError("setting serial");
  }

  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(valid_days) * 86400) ==
          nullptr) {
    return OpenSslError("setting validity");
  }

  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("fl development"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(spec.common_name.c_str()),
                                 -1, -1, 0) != 1) {
    return OpenSslError("setting subject");
  }
  X509* issuer_cert = issuer != nullptr ? issuer : cert.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert)) != 1) {
    return OpenSslError("setting issuer");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return OpenSslError("setting public key");

  if (spec.is_ca) {
    FL_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    FL_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    FL_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:FALSE"));
    FL_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_key_usage, "critical,digitalSignature"));
    FL_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_ext_key_usage, spec.extended_key_usage));
  }
  FL_RETURN_IF_ERROR(AddExtension(cert.get(), issuer_cert, NID_subject_key_identifier, "hash"));
  FL_RETURN_IF_ERROR(
      AddExtension(cert.get(), issuer_cert, NID_authority_key_identifier, "keyid:always"));
  if (!spec.subject_alt_names.empty()) {
    FL_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_subject_alt_name, spec.subject_alt_names));
  }

  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return OpenSslError("signing");
  return cert;
}

Result<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("PEM-encoding cert");
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Result<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("PEM-encoding key");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// Private keys are created 0600 from the start, so they are never readable by others,
// not even for the moment a chmod after writing would leave open.
Status WritePrivateFile(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Unavailable("cannot create " + path + ": " + std::strerror(errno));
  Status status;
  if (::fchmod(fd, 0600) != 0) {
    status = Status::Unavailable("cannot chmod " + path + ": " + std::strerror(errno));
  }
  size_t done = 0;
  while (status.ok() && done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = Status::Unavailable("cannot write " + path + ": " + std::strerror(errno));
    } else {
      done += static_cast<size_t>(n);
    }
  }
  if (::close(fd) != 0 && status.ok()) {
    status = Status::Unavailable("cannot close " + path + ": " + std::strerror(errno));
  }
  return status;
}

}  // namespace

Result<DevCertPaths> MakeDevCerts(const std::string& dir, const DevCertOptions& options) {
  if (options.valid_days <= 0) return Status::InvalidArgument("valid_days must be positive");
  if (options.server_names.empty()) return Status::InvalidArgument("server_names is empty");
  Env* env = Env::Default();
  FL_RETURN_IF_ERROR(env->CreateDirs(dir));

  std::string sans;
  for (const std::string& name : options.server_names) {
    if (!sans.empty()) sans += ",";
    sans += (IsIpAddress(name) ? "IP:" : "DNS:") + name;
  }

  FL_ASSIGN_OR_RETURN(PkeyPtr ca_key, NewKey());
  FL_ASSIGN_OR_RETURN(PkeyPtr server_key, NewKey());
  FL_ASSIGN_OR_RETURN(PkeyPtr client_key, NewKey());

  FL_ASSIGN_OR_RETURN(X509Ptr ca, MakeCert({"fl development CA", true, "", ""}, ca_key.get(),
                                           nullptr, ca_key.get(), options.valid_days));
  FL_ASSIGN_OR_RETURN(X509Ptr server,
                      MakeCert({options.server_names.front(), false, "serverAuth", sans},
                               server_key.get(), ca.get(), ca_key.get(), options.valid_days));
  FL_ASSIGN_OR_RETURN(X509Ptr client,
                      MakeCert({options.client_name, false, "clientAuth", ""}, client_key.get(),
                               ca.get(), ca_key.get(), options.valid_days));

  DevCertPaths paths;
  paths.ca_cert = dir + "/ca.pem";
  paths.ca_key = dir + "/ca.key";
  paths.server_cert = dir + "/server.pem";
  paths.server_key = dir + "/server.key";
  paths.client_cert = dir + "/client.pem";
  paths.client_key = dir + "/client.key";

  const std::pair<X509*, const std::string*> certs[] = {{ca.get(), &paths.ca_cert},
                                                        {server.get(), &paths.server_cert},
                                                        {client.get(), &paths.client_cert}};
  for (const auto& [cert, path] : certs) {
    FL_ASSIGN_OR_RETURN(std::string pem, CertPem(cert));
    FL_RETURN_IF_ERROR(env->WriteFileAtomic(*path, pem, /*sync=*/false));
  }
  const std::pair<EVP_PKEY*, const std::string*> keys[] = {{ca_key.get(), &paths.ca_key},
                                                           {server_key.get(), &paths.server_key},
                                                           {client_key.get(), &paths.client_key}};
  for (const auto& [key, path] : keys) {
    FL_ASSIGN_OR_RETURN(std::string pem, KeyPem(key));
    FL_RETURN_IF_ERROR(WritePrivateFile(*path, pem));
  }
  return paths;
}

}  // namespace fl::internal
