#include "api/tls.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace nodemeter::api {

namespace {

namespace ssl = boost::asio::ssl;

// An error for any result<T, std::string>, also where T could be built from a string.
struct Failure {
  std::string message;
  template <class T>
  operator boost::system::result<T, std::string>() && {
    return boost::system::result<T, std::string>(boost::system::in_place_error, std::move(message));
  }
};

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PKeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;

// The TLS 1.2 suites Go offers by default and Kubernetes recommends: forward secret AEADs only.
// TLS 1.3 keeps OpenSSL's suites (the same three Go uses).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kGroups = "X25519:P-256:P-384";

// OpenSSL's most recent reason, and the queue emptied.
std::string openssl_error(std::string_view fallback) {
  unsigned long code = 0;
  unsigned long last = 0;
  while ((code = ERR_get_error()) != 0)
    last = code;
  if (last == 0) return std::string(fallback);
  const char* reason = ERR_reason_error_string(last);
  return reason ? reason : std::string(fallback);
}

boost::system::result<std::string, std::string> read_file(const std::string& path,
                                                          std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Failure{std::string(what) + " " + path + ": " + std::strerror(errno ? errno : ENOENT)};
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Failure{std::string(what) + " " + path + ": read error"};
  return boost::system::result<std::string, std::string>(boost::system::in_place_value, text.str());
}

std::string to_pem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return {};
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(length));
}

bool is_dns_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '*' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool add_extension(X509* cert, int nid, const char* value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  ExtensionPtr extension(X509V3_EXT_conf_nid(nullptr, &v3, nid, value));
  return extension && X509_add_ext(cert, extension.get(), -1) == 1;
}

// Accepts whatever chain the client presents: the handshake goes on, and the verification's
// result stays in SSL_get_verify_result for the server to read into Peer.
int keep_going(int, X509_STORE_CTX*) {
  return 1;
}

boost::system::result<void, std::string> trust_client_cas(SSL_CTX* ctx, const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return std::string("out of memory reading the client CA bundle");
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  for (;;) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    if (X509_STORE_add_cert(store, cert.get()) != 1 ||
        SSL_CTX_add_client_CA(ctx, cert.get()) != 1) {
      return "the client CA bundle: " + openssl_error("cannot add a certificate");
    }
    ++count;
  }
  ERR_clear_error();  // the end of the bundle reads as an error
  if (count == 0) return std::string("the client CA bundle holds no PEM certificate");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, keep_going);
  return {};
}

}  // namespace

boost::system::result<std::string, std::string> parse_tls_version(std::string_view text) {
  using Result = boost::system::result<std::string, std::string>;
  if (text == "1.2" || text == "VersionTLS12") return Result(boost::system::in_place_value, "1.2");
  if (text == "1.3" || text == "VersionTLS13") return Result(boost::system::in_place_value, "1.3");
  return Failure{"TLS version \"" + std::string(text) +
                 "\" is not one of 1.2, 1.3 (or VersionTLS12, VersionTLS13)"};
}

boost::system::result<CertificatePair, std::string> make_self_signed_pair(
    const std::vector<std::string>& hosts, std::chrono::seconds validity) {
  const std::vector<std::string> names =
      hosts.empty() ? std::vector<std::string>{"localhost", "127.0.0.1", "::1"} : hosts;
  auto fail = [](std::string_view what) -> boost::system::result<CertificatePair, std::string> {
    return Failure{"making a self-signed certificate: " + openssl_error(what)};
  };

  PKeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return fail("cannot generate a P-256 key");
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return fail("out of memory");

  BignumPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return fail("cannot make a serial number");
  }
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(validity.count()));
  if (X509_set_pubkey(cert.get(), key.get()) != 1) return fail("cannot set the public key");

  // A CN is at most 64 characters (RFC 5280 ub-common-name); the SANs carry the full names.
  const std::string common_name = names.front().substr(0, 64);
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), name) != 1) {
    return fail("cannot set the subject");
  }

  GeneralNamesPtr sans(sk_GENERAL_NAME_new_null());
  if (!sans) return fail("out of memory");
  for (const std::string& host : names) {
    GENERAL_NAME* general = GENERAL_NAME_new();
    if (!general) return fail("out of memory");
    if (ASN1_OCTET_STRING* ip = a2i_IPADDRESS(host.c_str())) {
      GENERAL_NAME_set0_value(general, GEN_IPADD, ip);
    } else if (is_dns_name(host)) {
      ERR_clear_error();
      ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
      if (!dns || ASN1_STRING_set(dns, host.data(), static_cast<int>(host.size())) != 1) {
        ASN1_IA5STRING_free(dns);
        GENERAL_NAME_free(general);
        return fail("out of memory");
      }
      GENERAL_NAME_set0_value(general, GEN_DNS, dns);
    } else {
      GENERAL_NAME_free(general);
      ERR_clear_error();
      return Failure{"self-signed certificate host \"" + host +
                     "\" is neither an IP address nor a DNS name"};
    }
    sk_GENERAL_NAME_push(sans.get(), general);
  }
  // No keyUsage: with one that lacks keyCertSign, OpenSSL would not take the certificate as its
  // own issuer when a client trusts it directly.
  if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) != 1 ||
      !add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !add_extension(cert.get(), NID_ext_key_usage, "serverAuth") ||
      !add_extension(cert.get(), NID_subject_key_identifier, "hash")) {
    return fail("cannot add the certificate's extensions");
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return fail("cannot sign");

  CertificatePair pair;
  pair.cert_pem = to_pem(cert.get());
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      pair.cert_pem.empty()) {
    return fail("cannot write PEM");
  }
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio.get(), &data);
  pair.key_pem.assign(data, static_cast<size_t>(length));
  return pair;
}

boost::system::result<std::shared_ptr<ssl::context>, std::string> make_server_tls(
    const ServerTlsOptions& options) {
  using Result = boost::system::result<std::shared_ptr<ssl::context>, std::string>;
  auto version = parse_tls_version(options.min_version);
  if (!version) return Result(boost::system::in_place_error, version.error());

  CertificatePair pair;
  std::string cert_source = "the self-signed certificate";
  std::string key_source = "the self-signed key";
  if (!options.cert_file.empty() || !options.key_file.empty()) {
    if (options.cert_file.empty() || options.key_file.empty()) {
      return Result(boost::system::in_place_error,
                    std::string("a TLS certificate file and its private key file go together: "
                                "give both or neither"));
    }
    auto cert = read_file(options.cert_file, "TLS certificate file");
    if (!cert) return Result(boost::system::in_place_error, cert.error());
    auto key = read_file(options.key_file, "TLS private key file");
    if (!key) return Result(boost::system::in_place_error, key.error());
    pair = {std::move(*cert), std::move(*key)};
    cert_source = "TLS certificate file " + options.cert_file;
    key_source = "TLS private key file " + options.key_file;
  } else if (options.self_signed) {
    auto made = make_self_signed_pair(options.self_signed_hosts);
    if (!made) return Result(boost::system::in_place_error, made.error());
    pair = std::move(*made);
  } else {
    return Result(boost::system::in_place_error,
                  std::string("TLS needs a certificate and key file, or a self-signed pair"));
  }

  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();
  SSL_CTX_set_min_proto_version(ctx, *version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1 ||
      SSL_CTX_set1_groups_list(ctx, kGroups) != 1) {
    return Result(boost::system::in_place_error,
                  "TLS settings: " + openssl_error("cipher suites unavailable"));
  }
  // Resumed sessions keep the client certificate; OpenSSL needs a context name to resume them.
  static constexpr unsigned char kSessionContext[] = "nodemeter";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);

  boost::system::error_code ec;
  context->use_certificate_chain(boost::asio::buffer(pair.cert_pem), ec);
  if (ec) return Result(boost::system::in_place_error, cert_source + ": " + ec.message());
  context->use_private_key(boost::asio::buffer(pair.key_pem), ssl::context::pem, ec);
  if (ec || SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    // A key that reads well but was refused belongs to another certificate.
    BioPtr bio(BIO_new_mem_buf(pair.key_pem.data(), static_cast<int>(pair.key_pem.size())));
    PKeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
    ERR_clear_error();
    if (!key) {
      return Result(boost::system::in_place_error,
                    key_source + ": " + (ec ? ec.message() : "not a PEM private key"));
    }
    return Result(boost::system::in_place_error, key_source + " does not match " + cert_source);
  }

  if (!options.client_ca_pem.empty()) {
    if (auto r = trust_client_cas(ctx, options.client_ca_pem); !r) {
      return Result(boost::system::in_place_error, r.error());
    }
  }
  return context;
}

std::string served_certificate_pem(ssl::context& context) {
  const X509* cert = SSL_CTX_get0_certificate(context.native_handle());
  return cert ? to_pem(cert) : std::string();
}

}  // namespace nodemeter::api
